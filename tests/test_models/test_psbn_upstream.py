# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The upstream routes that rebuild or read BN layers, each shown dropping
alpha unpatched (``wrapper.__wrapped__``), then keeping it; and the table
``upstream.PATCHES`` of the places patched, checked against what upstream
imports where.

If a ``*_upstream_drops_alpha`` assertion starts failing after an upgrade,
upstream handles subclasses now: remove that wrapper from
``mmdet_psbn/models/layers/upstream.py``. If
``test_no_module_holds_an_original`` fails, upstream binds a patched function
at a new place: add it to that patch's ``also_at``.
"""
import ast
import copy
import importlib
import json
import os.path as osp
import subprocess
import sys
import textwrap
import types
import warnings

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
from ..conftest import REPO
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
    return {
        name: type(m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


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
    monkeypatch.setattr(mmengine_model_utils, 'revert_sync_batchnorm', revert)
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
                         capture_output=True,
                         text=True,
                         timeout=300)
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


def test_install_is_idempotent_for_every_place_in_the_table():
    before = _table_state()
    upstream.install_upstream_patches()
    importlib.reload(upstream).install_upstream_patches()
    assert _table_state() == before


# --- the table: every place named, every place checked -----------------------
#: Imported by the completeness sweep before and after the plugin: the
#: runtime entry points of users (Runner and strategies, init_detector,
#: ConvModule, eager fusion, fx fusion), and every place in the table.
_SWEEP_ROOTS = ('mmengine.runner', 'mmengine._strategy', 'mmdet.apis',
                'mmcv.cnn', 'torch.ao.quantization', 'torch.quantization',
                'torch.fx.experimental.optimization')


def _import_if_installed(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name.split('.')[0]:
            raise
        return None


def _places(patch):
    """``(module name, module)`` of every imported place of ``patch``."""
    names = (patch.target, *patch.also_at)
    return [(n, sys.modules[n]) for n in names if n in sys.modules]


def _table_state():
    """What every place of the table holds now."""
    state = {}
    for patch in upstream.PATCHES:
        state[patch.label] = upstream._current_function(patch)
        for name, module in _places(patch)[1:]:
            state[f'{name}.{patch.name}'] = getattr(module, patch.name)
    return state


def test_every_place_in_the_table_holds_the_wrapper():
    for name in {n for p in upstream.PATCHES for n in (p.target, *p.also_at)}:
        _import_if_installed(name)
    with warnings.catch_warnings():
        warnings.simplefilter('error', upstream.UpstreamPatchWarning)
        upstream.install_upstream_patches()
    for patch in upstream.PATCHES:
        wrapper = upstream._current_function(patch)
        assert getattr(wrapper, upstream._MARK, False), patch.label
        assert not getattr(wrapper.__wrapped__, upstream._MARK, False)
        for name, module in _places(patch)[1:]:
            assert getattr(module, patch.name) is wrapper, (patch.label, name)


_SWEEP = """
import importlib, json, sys, warnings


def imp(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name.split('.')[0]:
            raise


def import_plugin():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        import mmdet_psbn  # noqa: F401
    return [str(w.message) for w in caught
            if w.category.__name__ == 'UpstreamPatchWarning']


order, roots = sys.argv[1], json.loads(sys.argv[2])
if order == 'after':
    warned = import_plugin()
for name in roots:
    imp(name)
if order == 'before':
    warned = import_plugin()
from mmdet_psbn.models.layers import upstream
not_wrapped, originals = [], []
for patch in upstream.PATCHES:
    wrapper = upstream._current_function(patch)
    if wrapper is None or not hasattr(wrapper, '__wrapped__'):
        not_wrapped.append(patch.label)
        continue
    for name in patch.also_at:
        module = sys.modules.get(name)
        if module is not None and getattr(module, patch.name) is not wrapper:
            not_wrapped.append(f'{name}.{patch.name}')
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, '__dict__', None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is wrapper.__wrapped__:
                originals.append(f'{name}.{attr} ({patch.label})')
print(json.dumps(dict(warned=warned, not_wrapped=not_wrapped,
                      originals=originals)))
"""


@pytest.mark.parametrize('order', ['before', 'after'])
def test_no_module_holds_an_original(order):
    """The sweep the package does not do: a fresh process imports the
    runtime entry points and every place of the table ``before`` or
    ``after`` the plugin, and looks through every module for a patched
    function's original. One found is an import site missing from the
    table."""
    places = sorted({n for p in upstream.PATCHES for n in p.also_at})
    res = subprocess.run([
        sys.executable, '-c', _SWEEP, order,
        json.dumps([*_SWEEP_ROOTS, *places])
    ],
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert found == dict(warned=[], not_wrapped=[], originals=[])


def test_every_patch_names_its_upstream_test():
    here = osp.dirname(osp.abspath(__file__))
    for patch in upstream.PATCHES:
        path, func = patch.test.split('::')
        with open(osp.join(here, path)) as f:
            tree = ast.parse(f.read())
        # Test functions, and test methods of test classes.
        names = {
            n.name
            for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
        }
        assert func in names, patch.label
        assert '_upstream_' in func, patch.test


def test_docs_list_every_patch_and_place():
    """docs/upstream.md is the table for readers: it names every patched
    function, every place, and the test that says when to remove it."""
    with open(osp.join(REPO, 'docs', 'upstream.md')) as f:
        text = f.read()
    for patch in upstream.PATCHES:
        for word in (patch.target, patch.name, *patch.also_at,
                     patch.test.split('::')[1]):
            assert f'`{word}`' in text, (patch.label, word)
    for word in ('register_safe_globals', 'MMENGINE_CHECKPOINT_GLOBALS',
                 'setup_cpu_distributed'):
        assert word in text


# --- installing: what a changed upstream gets --------------------------------
def _fake_modules(monkeypatch):
    """A fake upstream package: a function, a classmethod, and users."""

    def func(x):
        return ('original', x)

    class Owner:

        @classmethod
        def method(cls, x):
            return ('original method', x)

    defining = types.ModuleType('psbn_fake.defining')
    defining.func, defining.Owner = func, Owner
    user = types.ModuleType('psbn_fake.user')
    user.func = func
    changed = types.ModuleType('psbn_fake.changed')
    changed.func = lambda x: ('changed', x)
    gone = types.ModuleType('psbn_fake.gone')
    package = types.ModuleType('psbn_fake')
    package.__path__ = []  # a package: psbn_fake.<other> is not found
    for module in (package, defining, user, changed, gone):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return defining, user, changed, gone


def _fake_patch(name='func', also_at=(), target='psbn_fake.defining'):

    def make(original):

        def wrapper(*args):
            return ('wrapped', original(*args))

        return wrapper

    return upstream.Patch(target, name, make, also_at, why='', test='')


def test_install_rebinds_only_the_named_places(monkeypatch):
    defining, user, changed, _ = _fake_modules(monkeypatch)
    other = types.ModuleType('psbn_fake.other')  # holds it, not named
    other.func = defining.func
    monkeypatch.setitem(sys.modules, other.__name__, other)
    original = defining.func
    with warnings.catch_warnings():
        warnings.simplefilter('error', upstream.UpstreamPatchWarning)
        wrapper = upstream._install(_fake_patch(also_at=('psbn_fake.user', )))
    assert defining.func is wrapper and user.func is wrapper
    assert wrapper.__wrapped__ is original and wrapper(1) == ('wrapped',
                                                              ('original', 1))
    assert other.func is original  # no sweep
    # Idempotent; a place not imported yet is left to bind it later.
    again = upstream._install(
        _fake_patch(also_at=('psbn_fake.user', 'psbn_fake.not_imported')))
    assert again is wrapper and defining.func is wrapper
    assert 'psbn_fake.not_imported' not in sys.modules


def test_install_wraps_a_classmethod(monkeypatch):
    defining = _fake_modules(monkeypatch)[0]
    wrapper = upstream._install(_fake_patch('Owner.method'))
    assert isinstance(vars(defining.Owner)['method'], classmethod)
    assert defining.Owner.method(2) == ('wrapped', ('original method', 2))
    assert upstream._install(_fake_patch('Owner.method')) is wrapper


def test_install_warns_about_a_changed_place(monkeypatch):
    defining, _, changed, gone = _fake_modules(monkeypatch)
    kept = changed.func
    with pytest.warns(upstream.UpstreamPatchWarning) as record:
        upstream._install(
            _fake_patch(also_at=('psbn_fake.changed', 'psbn_fake.gone')))
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert 'psbn_fake.changed.func is neither the original nor the ' \
        'wrapper, so the patch of psbn_fake.defining.func' in messages[0]
    assert 'psbn_fake.gone has no func' in messages[1]
    assert changed.func is kept and not hasattr(gone, 'func')
    with pytest.warns(
            upstream.UpstreamPatchWarning,
            match=r'psbn_fake\.defining\.nothing does not exist'):
        assert upstream._install(_fake_patch('nothing')) is None


def test_install_skips_a_package_not_installed(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter('error', upstream.UpstreamPatchWarning)
        assert upstream._install(
            _fake_patch(target='psbn_no_such_package.module')) is None
    # A package that is there but lost the module: upstream changed.
    _fake_modules(monkeypatch)
    with pytest.warns(
            upstream.UpstreamPatchWarning,
            match=r'psbn_fake\.moved cannot be imported'):
        assert upstream._install(_fake_patch(target='psbn_fake.moved')) is None


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
        3,
        4,
        3,
        padding=1,
        norm_cfg=dict(type='psBN', alpha=ALPHA),
        act_cfg=None,
        efficient_conv_bn_eval=True)
    randomize_bn(module).eval()
    assert module.norm_name == 'bn'
    assert module.efficient_conv_bn_eval_forward is \
        conv_module.efficient_conv_bn_eval_forward
    efficient = _eval_out(module, x)
    module.turn_on_efficient_conv_bn_eval(False)
    plain = _eval_out(module, x)
    torch.testing.assert_close(efficient, plain)


def test_mmcv_conv_module_efficient_upstream_drops_alpha():
    from mmcv.cnn import ConvModule
    from mmcv.cnn.bricks import conv_module
    x = tiny_input()
    module = ConvModule(
        3,
        4,
        3,
        padding=1,
        norm_cfg=dict(type='psBN', alpha=ALPHA),
        act_cfg=None,
        efficient_conv_bn_eval=True)
    randomize_bn(module).eval()
    module.turn_on_efficient_conv_bn_eval(False)
    plain = _eval_out(module, x)
    module.turn_on_efficient_conv_bn_eval(True)
    # Upstream's function, bound the way ConvModule binds it: no alpha.
    module.efficient_conv_bn_eval_forward = \
        conv_module.efficient_conv_bn_eval_forward.__wrapped__
    torch.testing.assert_close(_eval_out(module, x) + ALPHA, plain)


def test_mmcv_fuse_conv_bn_upstream_drops_alpha():
    fuse_module = importlib.import_module('mmcv.cnn.utils.fuse_conv_bn')
    x = tiny_input()
    model = randomize_bn(_ConvBN()).eval()
    upstream_conv = fuse_module._fuse_conv_bn.__wrapped__(
        copy.deepcopy(model.conv), model.bn)
    with torch.no_grad():
        torch.testing.assert_close(
            upstream_conv(x) + ALPHA, model.bn(model.conv(x)))


def test_mmcv_fuse_conv_bn_keeps_alpha():
    from mmcv.cnn import fuse_conv_bn
    x = tiny_input()
    model = randomize_bn(_ConvBN()).eval()
    expected = _eval_out(model, x)
    fused = fuse_conv_bn(model)
    assert not any(is_psbn(m) for m in fused.modules())
    torch.testing.assert_close(_eval_out(fused, x), expected)
