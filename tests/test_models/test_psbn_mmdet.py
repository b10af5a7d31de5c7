# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""psBN inside real mmdet models: names, freezing, optimizer, RetinaNet loss,
torchvision-format checkpoints, and deploy folding read by vanilla mmdet."""
import copy
import os.path as osp
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d, is_psbn
from .psbn_helpers import randomize_bn, tiny_input

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PSBN2BN = osp.join(REPO, 'tools', 'psbn2bn.py')


def _resnet(depth, norm_cfg, **kwargs):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = dict(
        type='ResNet', depth=depth, norm_cfg=norm_cfg, init_cfg=None, **kwargs)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def r50_bn():
    model = randomize_bn(_resnet(50, dict(type='BN')), seed=11)
    model.eval()  # mmdet's ResNet.train() returns None: no chaining
    return model


@pytest.fixture(scope='module')
def r50_ps():
    return _resnet(50, dict(type='psBN', requires_grad=True))


def _outs(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def test_resnet50_names_and_torchvision_checkpoint(r50_bn, r50_ps, tmp_path):
    assert type(r50_ps.bn1) is PostShiftedBatchNorm2d
    assert type(r50_ps.layer1[0].bn3) is PostShiftedBatchNorm2d
    assert type(r50_ps.layer1[0].downsample[1]) is PostShiftedBatchNorm2d
    ps_keys = set(r50_ps.state_dict())
    bn_keys = set(r50_bn.state_dict())
    alpha_keys = {k for k in ps_keys if k.endswith('.alpha')}
    assert len(alpha_keys) == 53 and 'layer1.0.bn1.alpha' in alpha_keys
    assert ps_keys - alpha_keys == bn_keys  # BN's names, plus alpha

    # torchvision format: the same names, no num_batches_tracked (as in the
    # ImageNet weights), no _metadata.
    tv = OrderedDict((k, v) for k, v in r50_bn.state_dict().items()
                     if not k.endswith('num_batches_tracked'))
    path = tmp_path / 'resnet50_tv.pth'
    torch.save(tv, path)
    # strict=True: any missing or unexpected key raises.
    load_checkpoint(r50_ps, str(path), map_location='cpu', strict=True)
    assert r50_ps.bn1.alpha.item() == pytest.approx(0.1)
    x = tiny_input(shape=(1, 3, 64, 64))
    for out_ps, out_bn in zip(_outs(r50_ps, x), _outs(r50_bn, x)):
        torch.testing.assert_close(out_ps, out_bn, rtol=1e-4, atol=1e-4)


def test_norm_eval_frozen_stages_and_decay_mult():
    model = _resnet(
        18,
        dict(type='psBN', requires_grad=True),
        norm_eval=True,
        frozen_stages=1)
    model.train()
    layers = [m for m in model.modules() if is_psbn(m)]
    assert layers and not any(m.training for m in layers)
    before = [m.running_mean.clone() for m in layers]
    model(tiny_input(shape=(2, 3, 64, 64))).__getitem__(-1).sum().backward()
    for m, mean in zip(layers, before):
        assert torch.equal(m.running_mean, mean)
    assert not model.bn1.weight.requires_grad
    assert not model.layer1[0].bn1.bias.requires_grad
    assert model.layer2[0].bn1.bias.requires_grad

    wrapper = build_optim_wrapper(
        model,
        dict(
            optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
            paramwise_cfg=dict(norm_decay_mult=0.)))
    decay = {
        id(g['params'][0]): g['weight_decay']
        for g in wrapper.optimizer.param_groups
    }
    bn = model.layer2[0].bn1
    assert decay[id(bn.weight)] == 0 and decay[id(bn.bias)] == 0
    assert decay[id(model.layer2[0].conv1.weight)] == pytest.approx(1e-4)


def test_retinanet_with_psbn_trains(tmp_path):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    init_default_scope('mmdet')
    config = tmp_path / 'retinanet_psbn.py'
    config.write_text(
        "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
        "model = dict(backbone=dict(norm_cfg=dict(type='psBN'), "
        'init_cfg=None))\n')
    cfg = Config.fromfile(str(config))
    assert cfg.model.backbone.norm_cfg == dict(type='psBN', requires_grad=True)
    model = MODELS.build(cfg.model)
    assert type(model.backbone.layer3[2].bn2) is PostShiftedBatchNorm2d
    model.train()
    packed = demo_mm_inputs(1, [[3, 64, 64]], num_items=[2], num_classes=80)
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    grad = model.backbone.layer4[0].bn1.bias.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_efficient_conv_bn_eval_on_mmdet_resnet():
    from mmengine.model.efficient_conv_bn_eval import \
        turn_on_efficient_conv_bn_eval

    class Holder(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = randomize_bn(
                _resnet(18, dict(type='psBN', alpha=0.05)), seed=12)

        def forward(self, x):
            return self.backbone(x)

    holder = Holder()
    x = tiny_input(shape=(1, 3, 64, 64))
    expected = _outs(holder, x)
    turn_on_efficient_conv_bn_eval(holder, ['backbone'])
    code = holder.backbone.forward.__self__.code
    assert code.count('efficient_conv_bn_eval_control') == 20  # every pair
    for out, ref in zip(_outs(holder, x), expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


VANILLA = """
import sys
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmdet.registry import MODELS
init_default_scope('mmdet')
model = MODELS.build(dict(type='ResNet', depth=50, init_cfg=None,
                          norm_cfg=dict(type='BN', requires_grad=True)))
ckpt = load_checkpoint(model, sys.argv[1], map_location='cpu', strict=True)
x = torch.load(sys.argv[2], weights_only=True)
model.eval()
with torch.no_grad():
    outs = model(x)
torch.save(list(outs), sys.argv[3])
assert 'mmdet_psbn' not in sys.modules
assert sorted(ckpt) == ['meta', 'state_dict'], sorted(ckpt)
print(ckpt['meta']['psbn2bn'])
"""


def test_folded_checkpoint_loads_into_vanilla_mmdet(r50_ps, tmp_path):
    model = randomize_bn(copy.deepcopy(r50_ps), seed=13)
    x = tiny_input(shape=(1, 3, 64, 64))
    expected = _outs(model, x)
    ckpt = tmp_path / 'psbn.pth'
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        dict(
            meta=dict(epoch=3, iter=30, mmengine_version='0.10.7'),
            state_dict=model.state_dict(),
            optimizer=optimizer.state_dict()), ckpt)
    folded = tmp_path / 'deploy' / 'bn.pth'
    res = subprocess.run(
        [sys.executable, PSBN2BN,
         str(ckpt), str(folded)],
        capture_output=True,
        text=True,
        timeout=300)
    assert res.returncode == 0, res.stderr
    assert '53 psBN layers' in res.stdout

    torch.save(x, tmp_path / 'x.pth')
    res = subprocess.run([
        sys.executable, '-c',
        textwrap.dedent(VANILLA),
        str(folded),
        str(tmp_path / 'x.pth'),
        str(tmp_path / 'outs.pth')
    ],
                         capture_output=True,
                         text=True,
                         timeout=300,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "'num_layers': 53" in res.stdout
    outs = torch.load(tmp_path / 'outs.pth', weights_only=True)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
