# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The upstream routes that rebuild or read BN layers, each shown dropping
alpha unpatched (``wrapper.__wrapped__``), then keeping it.

If a ``*_upstream_drops_alpha`` assertion starts failing after an upgrade,
upstream handles subclasses now: remove that wrapper from
``mmdet_psbn/models/layers/upstream.py``.
"""
import copy
import importlib
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.model import efficient_conv_bn_eval as ecbe
from mmengine.model import utils as mmengine_model_utils
from mmengine.model.utils import _BatchNormXd

from mmdet_psbn.models.layers import (PostShiftedBatchNorm2d,
                                      PostShiftedSyncBatchNorm, is_psbn,
                                      upstream)
from .psbn_helpers import TinyNet, randomize_bn, tiny_input

ALPHA = 0.05


def _ps(c):
    return PostShiftedBatchNorm2d(c, alpha=ALPHA)


def _ps_sync(c):
    return PostShiftedSyncBatchNorm(c, alpha=ALPHA)


def _mixed_net(norm=_ps):
    """A TinyNet with ps layers, one plain BN and one plain SyncBN."""
    model = randomize_bn(TinyNet(norm), seed=2)
    model.layer1[1].bn2 = randomize_bn(nn.BatchNorm2d(6), seed=3)
    model.layer1[1].downsample[1] = randomize_bn(nn.SyncBatchNorm(6), seed=4)
    return model


def _eval_out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _types(model):
    return {name: type(m) for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def _assert_ps_kept(model, cls, expected, x):
    types = _types(model)
    assert types['bn1'] is cls
    assert types['layer1.0.downsample.1'] is cls
    assert model.bn1.alpha.item() == pytest.approx(ALPHA)
    torch.testing.assert_close(_eval_out(model, x), expected)


# --- torch.nn.SyncBatchNorm.convert_sync_batchnorm ---------------------------
def _torch_convert_original():
    func = nn.SyncBatchNorm.__dict__['convert_sync_batchnorm'].__func__
    assert getattr(func, upstream._MARK)
    return func.__wrapped__


def test_torch_convert_upstream_drops_alpha(monkeypatch):
    # Unpatched as a whole: its recursion goes through the class attribute.
    monkeypatch.setattr(nn.SyncBatchNorm, 'convert_sync_batchnorm',
                        classmethod(_torch_convert_original()))
    out = nn.SyncBatchNorm.convert_sync_batchnorm(_mixed_net())
    assert type(out.bn1) is nn.SyncBatchNorm and not is_psbn(out.bn1)
    # And a psSyncBN (a SyncBatchNorm subclass) is rebuilt plain as well.
    out = nn.SyncBatchNorm.convert_sync_batchnorm(_ps_sync(4))
    assert type(out) is nn.SyncBatchNorm


def test_torch_convert_patched_keeps_alpha():
    x = tiny_input()
    model = _mixed_net()
    expected = _eval_out(model, x)
    old_weight = model.bn1.weight
    group = object()
    out = nn.SyncBatchNorm.convert_sync_batchnorm(model, group)
    _assert_ps_kept(out, PostShiftedSyncBatchNorm, expected, x)
    assert out.bn1.weight is old_weight and out.bn1.process_group is group
    types = _types(out)
    assert types['layer1.1.bn2'] is nn.SyncBatchNorm  # plain BN: upstream's
    assert types['layer1.1.downsample.1'] is nn.SyncBatchNorm
    # Root layers, and a psSyncBN already there, stay ps.
    assert type(nn.SyncBatchNorm.convert_sync_batchnorm(
        _ps(3))) is PostShiftedSyncBatchNorm
    assert type(nn.SyncBatchNorm.convert_sync_batchnorm(
        _ps_sync(3))) is PostShiftedSyncBatchNorm
    # A model without ps layers is upstream's business alone.
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(TinyNet())
    assert set(_types(plain).values()) == {nn.SyncBatchNorm}


# --- mmengine convert/revert_sync_batchnorm ----------------------------------
def test_mmengine_converters_upstream_drop_alpha(monkeypatch):
    # Unpatched as a whole: their recursion goes through the module global.
    convert = mmengine_model_utils.convert_sync_batchnorm.__wrapped__
    revert = mmengine_model_utils.revert_sync_batchnorm.__wrapped__
    monkeypatch.setattr(mmengine_model_utils, 'convert_sync_batchnorm',
                        convert)
    monkeypatch.setattr(mmengine_model_utils, 'revert_sync_batchnorm',
                        revert)
    out = convert(_mixed_net(), 'torch')
    assert type(out.bn1) is nn.SyncBatchNorm
    out = revert(_mixed_net(_ps_sync))
    assert type(out.bn1) is _BatchNormXd


def test_mmengine_convert_patched_keeps_alpha_or_refuses():
    from mmengine.model import convert_sync_batchnorm
    x = tiny_input()
    model = _mixed_net()
    expected = _eval_out(model, x)
    out = convert_sync_batchnorm(model, 'torch')
    _assert_ps_kept(out, PostShiftedSyncBatchNorm, expected, x)
    assert _types(out)['layer1.1.bn2'] is nn.SyncBatchNorm
    with pytest.raises(ValueError, match="sync_bn='mmcv'.*sync_bn='torch'"):
        convert_sync_batchnorm(_mixed_net(), 'mmcv')


def test_mmengine_revert_patched_keeps_alpha():
    from mmengine.model import revert_sync_batchnorm
    x = tiny_input()
    model = _mixed_net(_ps_sync)
    expected = _eval_out(model, x)
    out = revert_sync_batchnorm(model)
    _assert_ps_kept(out, PostShiftedBatchNorm2d, expected, x)
    assert _types(out)['layer1.1.downsample.1'] is _BatchNormXd  # upstream's
    assert type(revert_sync_batchnorm(_ps_sync(3))) is PostShiftedBatchNorm2d


def test_every_binding_of_the_mmengine_converters_is_patched():
    # Modules that bind them by name: imported before or after the plugin.
    import mmdet.apis.det_inferencer  # noqa: F401
    import mmdet.apis.inference  # noqa: F401
    import mmengine._strategy.distributed  # noqa: F401
    import mmengine._strategy.single_device  # noqa: F401
    import mmengine.runner.runner  # noqa: F401
    upstream.install_upstream_patches()  # what importing the plugin does
    users = dict(
        convert_sync_batchnorm=[
            'mmengine.model', 'mmengine.runner.runner',
            'mmengine._strategy.distributed'
        ],
        revert_sync_batchnorm=[
            'mmengine.model', 'mmengine.runner.runner',
            'mmengine._strategy.single_device', 'mmdet.apis.inference',
            'mmdet.apis.det_inferencer'
        ])
    for name, modules in users.items():
        wrapper = getattr(mmengine_model_utils, name)
        assert getattr(wrapper, upstream._MARK)
        for module in modules:
            assert getattr(sys.modules[module], name) is wrapper, module
        original = wrapper.__wrapped__
        assert not [
            mod_name for mod_name, mod in list(sys.modules.items())
            if getattr(mod, '__dict__', {}).get(name) is original
        ]


def test_torch_fusion_bindings_are_patched():
    """Where torch binds the fusion functions by name."""
    import torch.ao.quantization as tq
    from torch.fx.experimental import optimization
    fuse_modules_module = importlib.import_module(
        'torch.ao.quantization.fuse_modules')
    fusion = importlib.import_module('torch.nn.utils.fusion')
    fmm = importlib.import_module(
        'torch.ao.quantization.fuser_method_mappings')
    for func in (fusion.fuse_conv_bn_eval, fmm.get_fuser_method):
        assert getattr(func, upstream._MARK)
    assert torch.nn.utils.fuse_conv_bn_eval is fusion.fuse_conv_bn_eval
    assert optimization.fuse_conv_bn_eval is fusion.fuse_conv_bn_eval
    assert fuse_modules_module.get_fuser_method is fmm.get_fuser_method
    assert tq.get_fuser_method is fmm.get_fuser_method


def test_modules_imported_before_the_plugin_are_rebound():
    """A fresh process: mmdet.apis and the Runner first, then the plugin."""
    code = textwrap.dedent("""
        import mmdet.apis.inference as inference
        import mmengine.runner.runner as runner
        before = inference.revert_sync_batchnorm
        import mmdet_psbn
        assert inference.revert_sync_batchnorm is not before
        assert inference.revert_sync_batchnorm.__wrapped__ is before
        assert runner.revert_sync_batchnorm is inference.revert_sync_batchnorm
        print('ok')
    """)
    res = subprocess.run([sys.executable, '-c', code],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == 'ok'


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.net = _mixed_net(_ps_sync)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.net(inputs)


def test_runner_on_one_process_keeps_psbn(tmp_path):
    """The Runner reverts SyncBN on every non-distributed run."""
    from mmengine.runner import Runner
    runner = Runner(
        model=_ToyModel(),
        work_dir=str(tmp_path),
        experiment_name='psbn_revert',
        default_scope='mmdet')
    model = runner.model
    assert type(model.net.bn1) is PostShiftedBatchNorm2d
    assert model.net.bn1.alpha.item() == pytest.approx(ALPHA)


def _installed():
    fusion = importlib.import_module('torch.nn.utils.fusion')
    fmm = importlib.import_module(
        'torch.ao.quantization.fuser_method_mappings')
    return (nn.SyncBatchNorm.__dict__['convert_sync_batchnorm'].__func__,
            mmengine_model_utils.convert_sync_batchnorm,
            mmengine_model_utils.revert_sync_batchnorm,
            ecbe.efficient_conv_bn_eval_forward, fusion.fuse_conv_bn_eval,
            fmm.get_fuser_method)


def test_install_is_idempotent():
    before = _installed()
    upstream.install_upstream_patches()
    importlib.reload(upstream).install_upstream_patches()
    after = _installed()
    assert after == before
    for func in after:  # one layer of wrapping: the original is not ours
        assert not getattr(func.__wrapped__, upstream._MARK, False)


# --- paths that read bn.bias -------------------------------------------------
class _ConvBN(nn.Module):

    def __init__(self, norm=_ps):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = norm(4)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(
            nn.Conv2d(4, 4, 1, bias=False), norm(4), nn.ReLU())

    def forward(self, x):
        return self.head(self.relu(self.bn(self.conv(x))))


class _Holder(nn.Module):

    def __init__(self):
        super().__init__()
        self.body = randomize_bn(_ConvBN(), seed=5)

    def forward(self, x):
        return self.body(x)


def test_efficient_conv_bn_eval_upstream_drops_alpha():
    model = randomize_bn(_ConvBN()).eval()
    x = tiny_input()
    with torch.no_grad():
        fused = ecbe.efficient_conv_bn_eval_forward.__wrapped__(
            model.bn, model.conv, x)
        torch.testing.assert_close(fused + ALPHA, model.bn(model.conv(x)))
    # And upstream's transform: its fx trace goes through psBN's forward
    # (a functional batch_norm), so it pairs no conv with a psBN module and
    # fuses nothing; our wrapper traces ps layers as leaves and fuses them.
    turn_on = ecbe.turn_on_efficient_conv_bn_eval_for_single_model
    upstream_model = copy.deepcopy(model)
    turn_on.__wrapped__(upstream_model)
    code = upstream_model.forward.__self__.code
    assert 'efficient_conv_bn_eval_control' not in code
    assert 'batch_norm' in code
    torch.testing.assert_close(
        _eval_out(upstream_model, x), _eval_out(model, x))


def test_efficient_conv_bn_eval_patched_matches_unfused():
    x = tiny_input()
    holder = _Holder().eval()
    expected = _eval_out(holder, x)
    ecbe.turn_on_efficient_conv_bn_eval(holder, ['body'])
    code = holder.body.forward.__self__.code
    assert code.count('efficient_conv_bn_eval_control') == 2  # both pairs
    torch.testing.assert_close(_eval_out(holder, x), expected)
    # Training mode goes through psBN's own forward (and trains beta).
    holder.train()
    holder(x).sum().backward()
    assert holder.body.bn.bias.grad is not None


def test_mmcv_conv_module_efficient_path_keeps_alpha():
    from mmcv.cnn import ConvModule
    from mmcv.cnn.bricks import conv_module
    x = tiny_input()
    module = ConvModule(
        3, 4, 3, padding=1, norm_cfg=dict(type='psBN', alpha=ALPHA),
        act_cfg=None, efficient_conv_bn_eval=True)
    randomize_bn(module).eval()
    assert module.norm_name == 'bn'
    assert module.efficient_conv_bn_eval_forward is \
        conv_module.efficient_conv_bn_eval_forward
    efficient = _eval_out(module, x)
    module.turn_on_efficient_conv_bn_eval(False)
    plain = _eval_out(module, x)
    torch.testing.assert_close(efficient, plain)
    # Upstream's function, bound the way ConvModule binds it: no alpha.
    module.efficient_conv_bn_eval_forward = \
        conv_module.efficient_conv_bn_eval_forward.__wrapped__
    torch.testing.assert_close(_eval_out(module, x) + ALPHA, plain)


def test_mmcv_fuse_conv_bn_keeps_alpha():
    from mmcv.cnn import fuse_conv_bn
    fuse_module = importlib.import_module('mmcv.cnn.utils.fuse_conv_bn')
    x = tiny_input()
    model = randomize_bn(_ConvBN()).eval()
    expected = _eval_out(model, x)
    upstream_conv = fuse_module._fuse_conv_bn.__wrapped__(
        copy.deepcopy(model.conv), model.bn)
    with torch.no_grad():
        torch.testing.assert_close(
            upstream_conv(x) + ALPHA, model.bn(model.conv(x)))
    fused = fuse_conv_bn(model)
    assert not any(is_psbn(m) for m in fused.modules())
    torch.testing.assert_close(_eval_out(fused, x), expected)
