# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The registries of the ``psbn_cifar`` scope.

One child of each of mmengine's root registries (``Registry(..., parent=...,
scope='psbn_cifar')``, as mmdet and mmpretrain define theirs), so the CIFAR
classes do not occupy generic names (``CIFAR10``, ``RandomCrop``,
``ImageClassifier``, ``Accuracy``...) in the root, where every other scope
would see them. A config selects them with ``default_scope = 'psbn_cifar'``;
an unscoped name is looked up here first, then in the root, which is where
``psBN``, ``psSyncBN`` and ``CollapseMonitorHook`` live. From another scope
they are reachable as ``'psbn_cifar.CIFAR10'``. The registries this project
adds nothing to are children too, so that the Runner finds one for its
scope (and does not warn) wherever it builds something.
"""
import mmengine.registry as root
from mmengine.registry import Registry

__all__ = [
    'DATA_SAMPLERS', 'DATASETS', 'EVALUATOR', 'FUNCTIONS', 'HOOKS',
    'INFERENCERS', 'LOG_PROCESSORS', 'LOOPS', 'METRICS', 'MODEL_WRAPPERS',
    'MODELS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIM_WRAPPERS', 'OPTIMIZERS',
    'PARAM_SCHEDULERS', 'RUNNER_CONSTRUCTORS', 'RUNNERS', 'SCOPE',
    'STRATEGIES', 'TASK_UTILS', 'TRANSFORMS', 'VISBACKENDS', 'VISUALIZERS',
    'WEIGHT_INITIALIZERS'
]

SCOPE = 'psbn_cifar'

#: Where the classes of a registry are defined (imported on a build).
_LOCATIONS = dict(
    DATASETS=['psbn_cifar.datasets'],
    FUNCTIONS=['psbn_cifar.datasets'],
    HOOKS=['psbn_cifar.engine'],
    METRICS=['psbn_cifar.evaluation'],
    MODELS=['psbn_cifar.models'],
    TRANSFORMS=['psbn_cifar.datasets'])


def _child(name: str) -> Registry:
    """This scope's child of mmengine's root registry ``name``."""
    parent = getattr(root, name)
    return Registry(
        parent.name,
        parent=parent,
        scope=SCOPE,
        locations=_LOCATIONS.get(name, []))


(DATA_SAMPLERS, DATASETS, EVALUATOR, FUNCTIONS, HOOKS, INFERENCERS,
 LOG_PROCESSORS, LOOPS, METRICS, MODEL_WRAPPERS, MODELS,
 OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS,
 RUNNER_CONSTRUCTORS, RUNNERS, STRATEGIES, TASK_UTILS, TRANSFORMS, VISBACKENDS,
 VISUALIZERS, WEIGHT_INITIALIZERS) = (
     _child(name)
     for name in ('DATA_SAMPLERS', 'DATASETS', 'EVALUATOR', 'FUNCTIONS',
                  'HOOKS', 'INFERENCERS', 'LOG_PROCESSORS', 'LOOPS', 'METRICS',
                  'MODEL_WRAPPERS', 'MODELS', 'OPTIM_WRAPPER_CONSTRUCTORS',
                  'OPTIM_WRAPPERS', 'OPTIMIZERS', 'PARAM_SCHEDULERS',
                  'RUNNER_CONSTRUCTORS', 'RUNNERS', 'STRATEGIES', 'TASK_UTILS',
                  'TRANSFORMS', 'VISBACKENDS', 'VISUALIZERS',
                  'WEIGHT_INITIALIZERS'))
