# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Every config under configs/ loads and builds; the RetinaNet configs follow
the paper's protocol exactly, psBN and BN differ only in the norm layer, and
the ImageNet weights load from a local file or a pre-filled torch hub cache
without any download."""
import glob
import os.path as osp
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from ..conftest import REPO

ALL_CONFIGS = sorted(
    osp.relpath(p, REPO) for p in glob.glob(
        osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
# The detection configs (mmdet scope); configs/cifar10 (forwarding to
# projects/psbn_cifar/configs) has its own tests in projects/psbn_cifar/tests,
# configs/demo (make demo) in tests/test_tools/test_demo.py.
CONFIGS = [
    p for p in ALL_CONFIGS
    if not p.startswith(('configs/cifar10/', 'configs/demo/'))
]
MMDET_BASE = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
RESNET50_URL = 'https://download.pytorch.org/models/resnet50-0676ba61.pth'

# config -> (norm type, train/test scale, its BN baseline)
RETINANET = OrderedDict([
    ('configs/retinanet_r50_bn.py', ('BN', (1333, 800), None)),
    ('configs/retinanet_r50_psbn.py', ('psBN', (1333, 800),
                                       'configs/retinanet_r50_bn.py')),
    ('configs/retinanet_r50_bn_500.py', ('BN', (833, 500), None)),
    ('configs/retinanet_r50_psbn_500.py', ('psBN', (833, 500),
                                           'configs/retinanet_r50_bn_500.py')),
])


def load(path):
    if path.startswith('mmdet::'):
        from mmengine.utils import get_installed_path
        path = osp.join(
            get_installed_path('mmdet'), '.mim', 'configs',
            path[len('mmdet::'):])
    return Config.fromfile(osp.join(REPO, path))


def build_model(model_cfg):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    return MODELS.build(model_cfg)


def plain(tree):
    """``tree`` without the ``_scope_`` keys mmengine adds to the dicts of a
    config inherited from another package (``mmdet::``)."""
    if isinstance(tree, dict):
        return {k: plain(v) for k, v in tree.items() if k != '_scope_'}
    if isinstance(tree, (list, tuple)):
        return type(tree)(plain(v) for v in tree)
    return tree


def flatten(tree, prefix=''):
    """{'a.b.0.c': value} for every leaf of nested dicts and lists."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)) and any(
            isinstance(v, (dict, list, tuple)) for v in tree):
        items = enumerate(tree)
    else:
        return {prefix[:-1]: tree}
    out = {}
    for key, value in items:
        out.update(flatten(value, f'{prefix}{key}.'))
    return out


def config_diff(a, b):
    fa, fb = flatten(plain(a.to_dict())), flatten(plain(b.to_dict()))
    return {
        k: (fa.get(k, '<absent>'), fb.get(k, '<absent>'))
        for k in sorted(set(fa) | set(fb))
        if fa.get(k, '<absent>') != fb.get(k, '<absent>')
    }


def test_the_retinanet_configs_are_all_found():
    assert set(RETINANET) <= set(CONFIGS), CONFIGS
    # Nothing outside configs/cifar10 and configs/demo escapes the build test
    # below (FCOS and Faster R-CNN: tests/test_configs/
    # test_fcos_faster_rcnn.py).
    assert all(
        p.startswith(('configs/retinanet_', 'configs/fcos_',
                      'configs/faster-rcnn_', 'configs/toy/'))
        for p in CONFIGS), CONFIGS


@pytest.mark.parametrize('path', CONFIGS)
def test_config_loads_and_builds(path):
    cfg = load(path)
    # No download: the backbone starts from scratch here.
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 1e6
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(
        imports=['mmdet_psbn'], allow_failed_imports=False)


def _resize_scales(pipeline):
    return [t['scale'] for t in pipeline if t['type'] == 'Resize']


@pytest.mark.parametrize('path', list(RETINANET))
def test_retinanet_config_follows_the_protocol(path):
    norm, scale, _ = RETINANET[path]
    cfg = load(path)
    # COCO 2017, train and test at the scale, keeping the aspect ratio.
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds = cfg[loader].dataset
        assert ds.type == 'CocoDataset' and ds.data_root == 'data/coco/'
        assert _resize_scales(ds.pipeline) == [scale], loader
        assert all(t['keep_ratio'] for t in ds.pipeline
                   if t['type'] == 'Resize')
    assert cfg.train_dataloader.dataset.ann_file == \
        'annotations/instances_train2017.json'
    assert cfg.val_evaluator.ann_file == \
        'data/coco/annotations/instances_val2017.json'
    assert cfg.val_evaluator.type == 'CocoMetric'
    # 2 images per GPU; 8 GPUs give the base batch 16 of auto_scale_lr.
    assert cfg.train_dataloader.batch_size == 2
    assert plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=16)
    # 1x: 12 epochs, lr x0.1 after epochs 8 and 11, 500 iterations warm-up.
    assert plain(cfg.train_cfg) == dict(
        type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.end) == ('LinearLR', False,
                                                          500)
    assert (steps.type, steps.by_epoch, steps.milestones,
            steps.gamma) == ('MultiStepLR', True, [8, 11], 0.1)
    assert plain(cfg.optim_wrapper.optimizer) == dict(
        type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
    # The backbone: ImageNet ResNet-50, frozen stem and stage 1, BN
    # statistics frozen (norm_eval), affine parameters trained.
    bb = cfg.model.backbone
    assert (bb.type, bb.depth, bb.frozen_stages, bb.norm_eval,
            bb.style) == ('ResNet', 50, 1, True, 'pytorch')
    assert plain(bb.norm_cfg) == dict(type=norm, requires_grad=True)
    assert plain(bb.init_cfg) == dict(
        type='Pretrained', checkpoint=RESNET50_URL)
    assert cfg.model.bbox_head.num_classes == 80
    assert dict(
        type='CollapseMonitorHook', interval=50) in plain(cfg.custom_hooks)

    bb.init_cfg = None
    model = build_model(cfg.model)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    backbone_norms = [
        m for m in model.backbone.modules() if isinstance(m, _BatchNorm)
    ]
    assert len(norms) == len(backbone_norms) == 53  # the head has none
    expected = PostShiftedBatchNorm2d if norm == 'psBN' else nn.BatchNorm2d
    assert {type(m) for m in norms} == {expected}
    if norm == 'psBN':
        assert all(m.alpha.item() == pytest.approx(0.1) for m in norms)
    model.train()
    assert not any(m.training for m in norms)  # norm_eval
    assert not model.backbone.layer1[0].bn1.weight.requires_grad
    assert model.backbone.layer2[0].bn1.weight.requires_grad


PSBN_VS_BN = [(p, bn) for p, (_, _, bn) in RETINANET.items() if bn is not None
              ] + [('configs/toy/retinanet_r18_psbn_toy_finetune.py',
                    'configs/toy/retinanet_r18_bn_toy_finetune.py')]


@pytest.mark.parametrize('path,baseline', PSBN_VS_BN)
def test_psbn_config_differs_from_its_baseline_only_in_the_norm(
        path, baseline):
    assert config_diff(load(path), load(baseline)) == {
        'model.backbone.norm_cfg.type': ('psBN', 'BN')
    }


def test_demo_finetune_is_the_protocol_at_a_higher_lr():
    """Stage 2 of `make demo`: stage 1's detector, the backbone frozen as in
    mmdet's RetinaNet, twice stage 1's learning rate, the monitor on."""
    pre = load('configs/toy/retinanet_r18_fpn_toy_pretrain.py')
    ft = load('configs/toy/retinanet_r18_psbn_toy_finetune.py')
    assert (pre.model.backbone.norm_eval, pre.model.backbone.frozen_stages,
            pre.model.backbone.norm_cfg.type) == (False, -1, 'BN')
    assert (ft.model.backbone.norm_eval, ft.model.backbone.frozen_stages,
            ft.model.backbone.norm_cfg.type) == (True, 1, 'psBN')
    assert ft.load_from == 'work_dirs/demo/pretrain/epoch_8.pth'
    assert pre.train_cfg.max_epochs == 8 and pre.default_hooks.checkpoint[
        'interval'] == 8
    assert ft.optim_wrapper.optimizer.lr == 2 * pre.optim_wrapper.optimizer.lr
    assert ft.optim_wrapper.optimizer.weight_decay > 0  # psBN needs it
    assert [h['type'] for h in ft.custom_hooks] == ['CollapseMonitorHook']
    assert ft.randomness.seed == pre.randomness.seed == 0
    # The architecture is stage 1's, so its checkpoint loads entirely.
    diff = config_diff(ft, pre)
    assert not [
        k for k in diff if k.startswith('model.') and k not in
        ('model.backbone.norm_eval', 'model.backbone.frozen_stages',
         'model.backbone.norm_cfg.type')
    ], diff


def test_bn_baseline_is_mmdets_config_plus_monitor_and_weight_path():
    """What the 800 baseline changes in mmdet's retinanet_r50_fpn_1x_coco."""
    diff = config_diff(load('configs/retinanet_r50_bn.py'), load(MMDET_BASE))
    assert diff == {
        'custom_imports.allow_failed_imports': (False, '<absent>'),
        'custom_imports.imports': (['mmdet_psbn'], '<absent>'),
        'custom_hooks.0.type': ('CollapseMonitorHook', '<absent>'),
        'custom_hooks.0.interval': (50, '<absent>'),
        'model.backbone.init_cfg.checkpoint':
        (RESNET50_URL, 'torchvision://resnet50'),
    }


def test_scale_500_baseline_changes_only_the_scale():
    diff = config_diff(
        load('configs/retinanet_r50_bn_500.py'),
        load('configs/retinanet_r50_bn.py'))
    assert diff and all(new == (833, 500) and old == (1333, 800)
                        for key, (new, old) in diff.items()
                        if key != 'img_scale'), diff
    assert all(key.endswith('scale') for key in diff), diff


def _fake_imagenet_resnet50(path):
    """A torchvision-format ResNet-50 state dict with non-trivial BN values
    (what resnet50-0676ba61.pth holds, random here)."""
    from ..test_models.psbn_helpers import randomize_bn
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    net = randomize_bn(
        MODELS.build(dict(type='ResNet', depth=50, init_cfg=None)), seed=5)
    sd = OrderedDict((k, v) for k, v in net.state_dict().items()
                     if not k.endswith('num_batches_tracked'))
    sd['fc.weight'] = torch.zeros(1000, 2048)
    sd['fc.bias'] = torch.zeros(1000)
    torch.save(sd, path)
    return sd


@pytest.fixture(scope='module')
def fake_resnet50(tmp_path_factory):
    torch_home = tmp_path_factory.mktemp('torch_home')
    path = torch_home / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth'
    path.parent.mkdir(parents=True)
    return torch_home, path, _fake_imagenet_resnet50(path)


def _backbone_after_init(path, overrides=None):
    cfg = load(path)
    if overrides:
        cfg.merge_from_dict(overrides)  # what --cfg-options does
    model = build_model(cfg.model)
    model.init_weights()
    model.eval()  # mmdet's ResNet.train() returns None: no chaining
    return model.backbone


@pytest.mark.parametrize('how', ['hub_cache', 'local_path'])
def test_imagenet_weights_load_without_download(fake_resnet50, how,
                                                monkeypatch):
    """psBN and BN load the same ImageNet file; psBN stores bias - alpha and
    computes the very same backbone function."""
    torch_home, path, sd = fake_resnet50
    if how == 'hub_cache':
        # $TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth, as
        # docs/usage.md says; any network access would fail the test (no
        # such file there).
        monkeypatch.setenv('TORCH_HOME', str(torch_home))
        monkeypatch.setattr(torch.hub, '_hub_dir', None, raising=False)
        monkeypatch.setattr(
            torch.hub, 'download_url_to_file',
            lambda *a, **k: pytest.fail(f'download attempted: {a}'))
        overrides = None
        # The file must really sit where the hub looks for it.
        assert osp.samefile(
            osp.join(torch.hub.get_dir(), 'checkpoints', path.name), path)
    else:
        overrides = {'model.backbone.init_cfg.checkpoint': str(path)}
    bn = _backbone_after_init('configs/retinanet_r50_bn.py', overrides)
    ps = _backbone_after_init('configs/retinanet_r50_psbn.py', overrides)

    torch.testing.assert_close(bn.layer3[1].conv2.weight,
                               sd['layer3.1.conv2.weight'])
    torch.testing.assert_close(bn.layer3[1].bn2.bias, sd['layer3.1.bn2.bias'])
    torch.testing.assert_close(ps.layer3[1].bn2.bias,
                               sd['layer3.1.bn2.bias'] - 0.1)
    torch.testing.assert_close(ps.bn1.running_var, sd['bn1.running_var'])
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for out_ps, out_bn in zip(ps(x), bn(x)):
            torch.testing.assert_close(out_ps, out_bn, rtol=1e-4, atol=1e-4)
