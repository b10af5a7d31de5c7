# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""psbn_cifar: the paper's CIFAR-10 experiments as an mmdet-psbn project.

Configs load it with ``custom_imports = dict(imports=['psbn_cifar'])`` and
set ``default_scope = 'psbn_cifar'``: the dataset, transforms, classifier,
metric and snapshot hook are registered in the registries of that scope
(:mod:`psbn_cifar.registry`), not in mmengine's root. Importing it imports
``mmdet_psbn`` (psBN, psSyncBN, the collapse monitor).
"""
import mmdet_psbn  # noqa: F401  psBN, psSyncBN, CollapseMonitorHook
from . import datasets, engine, evaluation, models  # noqa: F401
from .registry import SCOPE

__all__ = ['SCOPE']
