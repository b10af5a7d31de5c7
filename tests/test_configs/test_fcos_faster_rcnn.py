# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The FCOS-R50 and Faster R-CNN R50-FPN configs over mmdet's 1x COCO
configs: each psBN config is its BN baseline with only the norm types
changed (FCOS: psBN backbone, psGN head; Faster R-CNN: psBN backbone), each
baseline says what it changes in mmdet's, they build the layers they name,
and the psBN configs train a few iterations on the toy set through
tools/train.py, the FCOS one also on two CPU processes through
tools/dist_train.sh.

The FCOS head needs 'psGN' in mmengine's root MODELS
(mmdet_psbn/models/layers): nothing here skips without it."""
import inspect
import json
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from ..conftest import (REPO, TOOLS, free_port, iter_schedule, run_tool,
                        write_toy_config)
from .test_configs import build_model, config_diff, load, plain
from .test_retinanet_psbn_train import TOY_DATA, read_scalars

FCOS_BN = 'configs/fcos_r50_bn.py'
FCOS_PSBN = 'configs/fcos_r50_psbn.py'
FRCNN_BN = 'configs/faster-rcnn_r50_fpn_bn.py'
FRCNN_PSBN = 'configs/faster-rcnn_r50_fpn_psbn.py'
FCOS_MMDET = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
FRCNN_MMDET = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
RESNET50_URL = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'
GN = dict(type='GN', num_groups=32, requires_grad=True)

# config -> (backbone norm, head norm, lr); the head norm is that of the
# FCOS head's 2 x 4 stacked convs (Faster R-CNN's FPN and heads have none).
CONFIGS = {
    FCOS_BN: ('BN', 'GN', 0.01),
    FCOS_PSBN: ('psBN', 'psGN', 0.01),
    FRCNN_BN: ('BN', None, 0.02),
    FRCNN_PSBN: ('psBN', None, 0.02),
}
BACKBONE_NORMS = 53
FCOS_HEAD_NORMS = 8


def psgn_class():
    cls = MODELS.get('psGN')
    assert cls is not None, (
        "'psGN' is not registered in mmengine's root MODELS: "
        'configs/fcos_r50_psbn.py needs it (mmdet_psbn/models/layers)')
    return cls


@pytest.mark.parametrize('path,baseline,diff', [
    (FCOS_PSBN, FCOS_BN, {
        'model.backbone.norm_cfg.type': ('psBN', 'BN'),
        'model.bbox_head.norm_cfg.type': ('psGN', 'GN'),
    }),
    (FRCNN_PSBN, FRCNN_BN, {
        'model.backbone.norm_cfg.type': ('psBN', 'BN')
    }),
])
def test_psbn_config_differs_from_its_baseline_only_in_the_norms(
        path, baseline, diff):
    assert config_diff(load(path), load(baseline)) == diff


MONITOR_AND_IMPORT = {
    'custom_imports.allow_failed_imports': (False, '<absent>'),
    'custom_imports.imports': (['mmdet_psbn'], '<absent>'),
    'custom_hooks.0.type': ('CollapseMonitorHook', '<absent>'),
    'custom_hooks.0.interval': (50, '<absent>'),
}


def test_fcos_baseline_is_mmdets_with_the_pytorch_style_resnet():
    """Mmdet's FCOS R50 has the caffe-style backbone with BN frozen whole; the
    baseline has torchvision's, BN affine trained (statistics frozen still),
    and writes out FCOSHead's default GN so that psGN changes only its type."""
    assert config_diff(load(FCOS_BN), load(FCOS_MMDET)) == {
        **MONITOR_AND_IMPORT,
        'model.backbone.init_cfg.checkpoint':
        (RESNET50_URL, 'open-mmlab://detectron/resnet50_caffe'),
        'model.backbone.norm_cfg.requires_grad': (True, False),
        'model.backbone.style': ('pytorch', 'caffe'),
        'model.bbox_head.norm_cfg.num_groups': (32, '<absent>'),
        'model.bbox_head.norm_cfg.requires_grad': (True, '<absent>'),
        'model.bbox_head.norm_cfg.type': ('GN', '<absent>'),
        'model.data_preprocessor.bgr_to_rgb': (True, False),
        'model.data_preprocessor.mean':
        ([123.675, 116.28, 103.53], [102.9801, 115.9465, 122.7717]),
        'model.data_preprocessor.std': ([58.395, 57.12,
                                         57.375], [1.0, 1.0, 1.0]),
    }
    # The preprocessing is the one mmdet uses with these weights.
    retina = load('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    assert plain(load(FCOS_BN).model.data_preprocessor) == plain(
        retina.model.data_preprocessor)
    # The written-out head norm is FCOSHead's default.
    from mmdet.models.dense_heads import FCOSHead
    default = inspect.signature(FCOSHead).parameters['norm_cfg'].default
    assert plain(load(FCOS_BN).model.bbox_head.norm_cfg) == default == GN


def test_faster_rcnn_baseline_is_mmdets_plus_monitor_and_weight_path():
    assert config_diff(load(FRCNN_BN), load(FRCNN_MMDET)) == {
        **MONITOR_AND_IMPORT,
        'model.backbone.init_cfg.checkpoint':
        (RESNET50_URL, 'torchvision://resnet50'),
    }


@pytest.mark.parametrize('path', list(CONFIGS))
def test_config_is_coco_1x_and_builds_its_norm_layers(path):
    backbone_norm, head_norm, lr = CONFIGS[path]
    cfg = load(path)
    # COCO 2017 at 1333x800, 2 images per GPU for the base batch 16, 1x.
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.train_dataloader.batch_size == 2
    assert plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=16)
    assert plain(cfg.train_cfg) == dict(
        type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
    assert cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.0001
    assert cfg.custom_imports == dict(
        imports=['mmdet_psbn'], allow_failed_imports=False)
    assert dict(
        type='CollapseMonitorHook', interval=50) in plain(cfg.custom_hooks)
    bb = cfg.model.backbone
    assert (bb.type, bb.depth, bb.style, bb.frozen_stages,
            bb.norm_eval) == ('ResNet', 50, 'pytorch', 1, True)
    assert plain(bb.norm_cfg) == dict(type=backbone_norm, requires_grad=True)
    assert plain(bb.init_cfg) == dict(
        type='Pretrained', checkpoint=RESNET50_URL)

    bb.init_cfg = None  # no download
    model = build_model(cfg.model)
    expected_bn = (
        PostShiftedBatchNorm2d if backbone_norm == 'psBN' else nn.BatchNorm2d)
    backbone_norms = [
        m for m in model.backbone.modules() if isinstance(m, _BatchNorm)
    ]
    assert len(backbone_norms) == BACKBONE_NORMS
    assert {type(m) for m in backbone_norms} == {expected_bn}
    if backbone_norm == 'psBN':
        assert all(m.alpha.item() == pytest.approx(0.1)
                   for m in backbone_norms)
    others = [
        m for name, m in model.named_modules()
        if not name.startswith('backbone')
        and isinstance(m, (_BatchNorm, nn.GroupNorm))
    ]
    if head_norm is None:
        assert others == []
    else:
        expected_gn = psgn_class() if head_norm == 'psGN' else nn.GroupNorm
        head_norms = [m for m in model.bbox_head.modules() if m in others]
        assert len(head_norms) == len(others) == FCOS_HEAD_NORMS
        assert {type(m) for m in head_norms} == {expected_gn}
        assert all(m.num_groups == 32 for m in head_norms)
        if head_norm == 'psGN':
            assert all(m.alpha.item() == pytest.approx(0.1)
                       for m in head_norms)
    # BN statistics frozen, the stem and stage 1 frozen, the rest trains.
    model.train()
    assert not any(m.training for m in backbone_norms)
    assert not model.backbone.layer1[0].bn1.weight.requires_grad
    assert model.backbone.layer2[0].bn1.weight.requires_grad
    assert all(m.training and m.weight.requires_grad for m in others)


def _toy_model(path):
    """The model part of the toy overrides: 3 classes, no ImageNet weights,
    every detection kept (pycocotools then evaluates even an untrained
    model)."""
    if path.startswith('configs/faster-rcnn'):
        return """
model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=3)),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))
"""
    return """
model = dict(
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(score_thr=0.0))
"""


def _toy_config(path, toy_coco, tmp_path, iters, monitor_interval=None):
    extra = iter_schedule(iters) + TOY_DATA + _toy_model(path)
    if monitor_interval:
        extra += ("custom_hooks = [dict(type='CollapseMonitorHook', "
                  f'interval={monitor_interval})]\n')
    else:
        extra += 'custom_hooks = []\n'
    return write_toy_config(
        tmp_path / osp.basename(path),
        toy_coco,
        base=osp.join(REPO, path),
        extra=extra)


def _alphas(checkpoint):
    sd = torch.load(checkpoint, map_location='cpu')['state_dict']
    alphas = [k for k in sd if k.endswith('.alpha')]
    return ([k for k in alphas if k.startswith('backbone.')],
            [k for k in alphas if not k.startswith('backbone.')])


@pytest.mark.parametrize('path', [FCOS_PSBN, FRCNN_PSBN])
def test_psbn_config_trains_through_train_py(path, toy_coco, tmp_path):
    if path == FCOS_PSBN:
        psgn_class()  # say what is missing rather than a Runner traceback
    cfg = _toy_config(path, toy_coco, tmp_path, iters=2)
    work_dir = tmp_path / 'work'
    proc = run_tool([osp.join(TOOLS, 'train.py'), cfg, '--work-dir', work_dir])
    log = proc.stdout
    assert proc.returncode == 0, log[-5000:]
    losses = [r['loss'] for r in read_scalars(str(work_dir)) if 'loss' in r]
    assert len(losses) == 2 and all(map(math.isfinite, losses)), losses
    assert 'Average Precision' in log
    backbone, head = _alphas(work_dir / 'iter_2.pth')
    assert len(backbone) == BACKBONE_NORMS
    assert len(head) == (FCOS_HEAD_NORMS if path == FCOS_PSBN else 0), head
    assert all(k.startswith('bbox_head.') for k in head), head


def test_fcos_psbn_trains_on_two_processes(toy_coco, tmp_path):
    """As the config's header says (tools/dist_train.sh CONFIG GPUS), with the
    collapse monitor measuring every iteration."""
    psgn_class()
    cfg = _toy_config(
        FCOS_PSBN, toy_coco, tmp_path, iters=3, monitor_interval=1)
    work_dir = tmp_path / 'work'
    proc = run_tool([
        osp.join(TOOLS, 'dist_train.sh'), cfg, '2', '--work-dir', work_dir,
        '--auto-scale-lr'
    ],
                    env=dict(PORT=str(free_port())))
    log = proc.stdout
    assert proc.returncode == 0, log[-5000:]
    # 2 processes x 2 images = 4 of the base batch 16.
    assert 'LR is set based on batch size of 16 and the current batch ' \
        'size is 4. Scaling the original LR by 0.25.' in log, log[-5000:]
    assert 'Average Precision' in log
    backbone, head = _alphas(work_dir / 'iter_3.pth')
    assert (len(backbone), len(head)) == (BACKBONE_NORMS, FCOS_HEAD_NORMS)

    # The monitor's report (rank 0) covers the backbone and the head.
    with open(work_dir / 'collapse' / 'report.json') as f:
        report = json.load(f)
    names = [r['name'] for r in report['layers']]
    assert sum(n.startswith('backbone.') for n in names) == BACKBONE_NORMS
    assert sum(n.startswith('bbox_head.') for n in names) == FCOS_HEAD_NORMS
    kinds = {
        part:
        {r['kind']
         for r in report['layers'] if r['name'].startswith(part)}
        for part in ('backbone.', 'bbox_head.')
    }
    assert kinds == {'backbone.': {'psBN'}, 'bbox_head.': {'psGN'}}, kinds
    assert [r['iter'] for r in report['history']][-1] == 3
