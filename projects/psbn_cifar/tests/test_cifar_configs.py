# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Every config of the project (and its forwarding copy under configs/cifar10)
loads and builds: model, datasets, evaluator, optimizer, schedule and hooks."""
import glob
import os.path as osp

import pytest
from cifar_test_utils import CIFAR_CONFIGS
from mmengine.config import Config
from mmengine.registry import DefaultScope

import psbn_cifar  # noqa: F401
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from tests.conftest import REPO

CONFIGS = sorted(glob.glob(CIFAR_CONFIGS + '*.py'))


def test_the_experiments_are_all_there():
    names = {osp.basename(p)[:-3] for p in CONFIGS}
    for net in ('resnet20', 'resnet56', 'vgg16bn'):
        for norm in ('bn', 'bn-lrelu', 'psbn'):
            assert f'{net}_{norm}_restart9x100' in names
    assert 'resnet20_bn_random-labels' in names
    for norm in ('bn', 'psbn'):
        for lr in ('0.1', '0.2'):
            assert f'resnet110_{norm}_snapshot5x40_lr{lr}' in names


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds(path, toy_cifar):
    cfg = Config.fromfile(path)
    # Root-registry names, whatever scope an earlier build left current
    # (the Runner makes the config's scope current the same way).
    assert cfg.default_scope == 'psbn_cifar'
    with DefaultScope.overwrite_default_scope('mmdet'), \
            DefaultScope.overwrite_default_scope(cfg.default_scope):
        _check_config(path, cfg, toy_cifar)


def _check_config(path, cfg, toy_cifar):
    from mmengine.registry import PARAM_SCHEDULERS

    from psbn_cifar.registry import DATASETS, HOOKS, METRICS, MODELS
    name = osp.basename(path)
    model_cfg = cfg.model.copy()
    model_cfg['data_preprocessor'] = cfg.data_preprocessor
    model = MODELS.build(model_cfg)
    has_ps = any(
        isinstance(m, PostShiftedBatchNorm2d) for m in model.modules())
    assert has_ps == ('psbn' in name)
    depth = getattr(model.backbone, 'depth', None)
    for d in (20, 56, 110):
        if f'resnet{d}_' in name:
            assert depth == d
    if 'lrelu' in name:
        assert 'LeakyReLU(negative_slope=0.01' in repr(model)

    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.momentum, opt.weight_decay) == ('SGD', 0.9, 5e-4)
    assert opt.lr == (0.2 if 'lr0.2' in name else 0.1)
    assert cfg.train_dataloader.batch_size == 128
    sched = cfg.param_scheduler
    assert sched.type == 'CosineRestartLR'
    rounds = (5, 40) if 'snapshot5x40' in name else (9, 100)
    assert sched.periods == [rounds[1]] * rounds[0]
    assert cfg.train_cfg.max_epochs == rounds[0] * rounds[1]
    import torch
    optimizer = torch.optim.SGD(model.parameters(), lr=opt.lr)
    built = PARAM_SCHEDULERS.build(
        dict(sched, optimizer=optimizer, epoch_length=391))
    assert built.periods == [391 * rounds[1]] * rounds[0]

    for key in ('train_dataloader', 'val_dataloader'):
        ds = DATASETS.build(dict(cfg[key].dataset, data_root=toy_cifar))
        assert len(ds) == (100 if ds.test_mode else 200)
        assert ds.random_labels == ('random-labels' in name
                                    and key == 'train_dataloader')
    METRICS.build(cfg.val_evaluator)
    hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
    assert {type(h).__name__
            for h in hooks} == {'CollapseMonitorHook', 'RestartSnapshotHook'}
    if 'snapshot5x40' in name:
        snap = [h for h in hooks if type(h).__name__ == 'RestartSnapshotHook']
        assert snap[0].ensemble == 3 and snap[0].reference['ensemble'] > 94


def test_the_old_config_paths_still_work():
    # configs/cifar10/X.py forwards to projects/psbn_cifar/configs/X.py, so
    # commands written before the move load the same config.
    old = sorted(glob.glob(osp.join(REPO, 'configs', 'cifar10', '*.py')))
    assert [osp.basename(p) for p in old] == [osp.basename(p) for p in CONFIGS]
    for path in old:
        new = osp.join(CIFAR_CONFIGS, osp.basename(path))
        assert Config.fromfile(path).to_dict() == Config.fromfile(
            new).to_dict(), path
