# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""psBN wherever BN goes: mmengine's init rules, torch's conv-BN fusions,
torch.fx / jit / onnx tracing, and psBN checkpoints loaded into BN models.

Where upstream itself is shown (``__wrapped__``, a direct
``fuse_conv_bn_weights`` call), the test says what it shows; if such an
assertion fails after an upgrade, upstream changed and the matching wrapper
in ``mmdet_psbn/models/layers/upstream.py`` may go.
"""
import copy
import importlib
import operator
import pickle
from collections import OrderedDict
from unittest import mock

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.norm import infer_abbr
from mmengine.model import BaseModule, initialize
from mmengine.model.weight_init import _get_bases_name
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet_psbn.models.layers import (PostShiftedBatchNorm2d,
                                      PostShiftedSyncBatchNorm,
                                      fold_psbn_entries_on_load, is_psbn)
from mmdet_psbn.models.layers import psbn as psbn_module
from .psbn_helpers import TinyNet, randomize_bn, tiny_input

ALPHA = 0.05


def _ps(c, **kwargs):
    return PostShiftedBatchNorm2d(c, alpha=ALPHA, **kwargs)


def _eval_out(model, x):
    model.eval()  # mmdet's ResNet.train() returns None: no chaining
    with torch.no_grad():
        return model(x)


def _resnet(depth, norm_cfg, **kwargs):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    kwargs.setdefault('init_cfg', None)
    return MODELS.build(
        dict(type='ResNet', depth=depth, norm_cfg=norm_cfg, **kwargs))


def _cifar_resnet(norm_cfg, **kwargs):
    from psbn_cifar.models import CIFARResNet
    return CIFARResNet(depth=8, norm_cfg=norm_cfg, **kwargs)


# --- init rules --------------------------------------------------------------
def _norm_layers(model):
    return OrderedDict((name, m) for name, m in model.named_modules()
                       if isinstance(m, _BatchNorm))


def _init_bn_and_psbn(build):
    """The same model with BN and with psBN, BN state randomised the same way
    (so a rule that skips a layer leaves a visible trace), then
    ``init_weights()``."""
    models = []
    for norm_cfg in (dict(type='BN'), dict(type='psBN', alpha=ALPHA)):
        model = randomize_bn(build(norm_cfg), seed=3)
        model.init_weights()
        models.append(model)
    return models


def _assert_same_gamma_beta(bn_model, ps_model):
    bn_layers, ps_layers = _norm_layers(bn_model), _norm_layers(ps_model)
    assert bn_layers and list(bn_layers) == list(ps_layers)
    for name, bn in bn_layers.items():
        ps = ps_layers[name]
        assert is_psbn(ps) and not is_psbn(bn), name
        torch.testing.assert_close(
            ps.weight, bn.weight, rtol=0, atol=0, msg=f'{name}.weight')
        torch.testing.assert_close(
            ps.bias, bn.bias, rtol=0, atol=0, msg=f'{name}.bias')


GAMMA_STUDY = dict(type='Constant', layer='_BatchNorm', val=0.5, bias=0.2)


@pytest.mark.parametrize(
    'init_cfg', [None, GAMMA_STUDY],
    ids=['default_zero_init_residual', 'constant_0.5'])
def test_mmdet_resnet_init_treats_psbn_as_bn(init_cfg):
    """Mmdet's ResNet default init (``Constant`` on ``'_BatchNorm'``, then
    ``zero_init_residual`` on ``norm2``) and a gamma-init study rule."""
    bn_model, ps_model = _init_bn_and_psbn(
        lambda norm_cfg: _resnet(18, norm_cfg, init_cfg=init_cfg))
    _assert_same_gamma_beta(bn_model, ps_model)
    gamma = 1.0 if init_cfg is None else 0.5
    assert torch.all(ps_model.bn1.weight == gamma)
    if init_cfg is None:  # zero_init_residual reached psBN too
        assert torch.all(ps_model.layer1[0].bn2.weight == 0)
        assert torch.all(ps_model.layer1[0].bn1.weight == 1)
    else:
        assert torch.all(ps_model.layer1[0].bn2.bias == 0.2)


@pytest.mark.parametrize(
    'init_cfg', ['default', GAMMA_STUDY], ids=['default', 'constant_0.5'])
def test_cifar_resnet_init_treats_psbn_as_bn(init_cfg):
    kwargs = {} if init_cfg == 'default' else dict(init_cfg=init_cfg)
    bn_model, ps_model = _init_bn_and_psbn(
        lambda norm_cfg: _cifar_resnet(norm_cfg, **kwargs))
    _assert_same_gamma_beta(bn_model, ps_model)
    gamma = 1.0 if init_cfg == 'default' else 0.5
    assert all(
        torch.all(m.weight == gamma) for m in _norm_layers(ps_model).values())


class _Norms(BaseModule):

    def __init__(self, norms, init_cfg):
        super().__init__(init_cfg)
        self.norms = nn.ModuleList(norms)


@pytest.mark.parametrize('layer', [
    '_BatchNorm', 'BatchNorm2d', 'SyncBatchNorm', ['GroupNorm', '_BatchNorm']
])
@pytest.mark.parametrize('init_type', ['Constant', 'Normal', 'Uniform'])
def test_every_rule_naming_bn_classes_reaches_the_ps_twin(layer, init_type):
    """PsBN is initialised exactly when BatchNorm2d is, psSyncBN exactly when
    SyncBatchNorm is, by every mmengine initialiser."""
    kwargs = dict(
        Constant=dict(val=0.5), Normal=dict(std=0.3),
        Uniform=dict(a=-2, b=-1))[init_type]
    cfg = dict(type=init_type, layer=layer, bias=0.2, **kwargs)
    layers = []
    for classes in ((nn.BatchNorm2d, nn.SyncBatchNorm),
                    (PostShiftedBatchNorm2d, PostShiftedSyncBatchNorm)):
        torch.manual_seed(0)
        model = randomize_bn(
            _Norms([cls(4) for cls in classes], init_cfg=cfg), seed=5)
        before = copy.deepcopy(model)
        torch.manual_seed(1)
        model.init_weights()
        changed = [
            not torch.equal(m.weight, b.weight)
            for m, b in zip(model.norms, before.norms)
        ]
        layers.append((model, changed))
    (bn_model, bn_changed), (ps_model, ps_changed) = layers
    assert ps_changed == bn_changed and any(bn_changed)
    for bn, ps in zip(bn_model.norms, ps_model.norms):
        torch.testing.assert_close(ps.weight, bn.weight, rtol=0, atol=0)
        torch.testing.assert_close(ps.bias, bn.bias, rtol=0, atol=0)


def test_init_rule_matching_names_and_the_rest_of_the_contract():
    """What mmengine's rules match on, and what must not change with it."""
    for ps_cls, bn_cls in ((PostShiftedBatchNorm2d, nn.BatchNorm2d),
                           (PostShiftedSyncBatchNorm, nn.SyncBatchNorm)):
        bn_names = {bn_cls.__name__} | set(_get_bases_name(bn_cls(2)))
        assert bn_names <= set(_get_bases_name(ps_cls(2)))
        # The MRO is BN's with the mixin in front.
        assert ps_cls.__mro__[2:] == bn_cls.__mro__
        assert infer_abbr(ps_cls) == 'bn'
    initialize(_ps(3), dict(type='Constant', layer='_BatchNorm', val=2))
    layer = randomize_bn(_ps(3))
    clone = pickle.loads(pickle.dumps(layer))
    assert type(clone) is PostShiftedBatchNorm2d
    for key, value in layer.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key


# --- conv-BN fusion ----------------------------------------------------------
class _ConvBNReLU(nn.Module):

    def __init__(self, norm=_ps):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = norm(4)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), norm(4))

    def forward(self, x):
        return self.head(self.relu(self.bn(self.conv(x))))


def _fusion_module():
    return importlib.import_module('torch.nn.utils.fusion')


def test_fuse_conv_bn_eval_upstream_drops_alpha():
    model = randomize_bn(_ConvBNReLU()).eval()
    x = tiny_input()
    upstream = _fusion_module().fuse_conv_bn_eval.__wrapped__
    fused = upstream(model.conv, model.bn)
    with torch.no_grad():
        torch.testing.assert_close(fused(x) + ALPHA, model.bn(model.conv(x)))


@pytest.mark.parametrize(
    'kwargs',
    [dict(), dict(affine=False), dict(bias=False)], ids=str)
def test_fuse_conv_bn_eval_keeps_alpha(kwargs):
    x = tiny_input()
    conv = nn.Conv2d(3, 4, 3, padding=1).eval()
    bn = randomize_bn(_ps(4, **kwargs)).eval()
    beta = bn._parameters['bias']
    with torch.no_grad():
        expected = bn(conv(x))
        for fuse in (torch.nn.utils.fuse_conv_bn_eval,
                     _fusion_module().fuse_conv_bn_eval):
            fused = fuse(conv, bn)
            torch.testing.assert_close(fused(x), expected)
    assert bn._parameters['bias'] is beta  # the layer is left as it was
    # transposed convs too
    convt = nn.ConvTranspose2d(3, 4, 3).eval()
    with torch.no_grad():
        fused = torch.nn.utils.fuse_conv_bn_eval(convt, bn, transpose=True)
        torch.testing.assert_close(fused(x), bn(convt(x)))


def test_fuse_conv_bn_weights_takes_tensors_use_post_shift_folded():
    """It never sees the layer: with ``bn.bias`` it fuses BN (documented,
    not patchable); inside ``post_shift_folded`` it fuses psBN."""
    from torch.nn.utils import fuse_conv_bn_weights
    x = tiny_input()
    conv = nn.Conv2d(3, 4, 3, padding=1).eval()
    bn = randomize_bn(_ps(4)).eval()

    def fused_out(bias):
        fused = copy.deepcopy(conv)
        fused.weight, fused.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
            bn.weight, bias)
        return fused(x)

    with torch.no_grad():
        expected = bn(conv(x))
        torch.testing.assert_close(fused_out(bn.bias) + ALPHA, expected)
        with bn.post_shift_folded():
            torch.testing.assert_close(fused_out(bn.bias), expected)


def test_fx_optimization_fuse_keeps_alpha():
    """Torch's fx fusion pass: it traces the model (psBN through its forward)
    and fuses only exact ``nn.BatchNorm2d`` modules."""
    from torch.fx.experimental.optimization import fuse
    x = tiny_input()
    model = randomize_bn(_ConvBNReLU()).eval()
    expected = _eval_out(model, x)
    torch.testing.assert_close(_eval_out(fuse(model), x), expected)


def test_fuse_modules_upstream_refuses_psbn():
    fmm = importlib.import_module(
        'torch.ao.quantization.fuser_method_mappings')
    with pytest.raises(AssertionError, match='did not find fuser method'):
        fmm.get_fuser_method.__wrapped__((nn.Conv2d, PostShiftedBatchNorm2d))


def test_fuse_modules_keeps_alpha():
    from torch.ao.quantization import fuse_modules
    x = tiny_input()
    model = randomize_bn(_ConvBNReLU()).eval()
    expected = _eval_out(model, x)
    fused = fuse_modules(model, [['conv', 'bn', 'relu'], ['head.0', 'head.1']])
    assert not any(is_psbn(m) for m in fused.modules())
    torch.testing.assert_close(_eval_out(fused, x), expected)
    # A plain BN model still goes to upstream alone.
    plain = randomize_bn(_ConvBNReLU(nn.BatchNorm2d)).eval()
    expected = _eval_out(plain, x)
    fused = fuse_modules(plain, [['conv', 'bn']])
    torch.testing.assert_close(_eval_out(fused, x), expected)


def test_fuse_modules_qat_refuses_with_the_fix():
    from torch.ao.quantization import fuse_modules_qat
    model = randomize_bn(_ConvBNReLU()).train()
    with pytest.raises(ValueError, match=r'tools/psbn2bn\.py'):
        fuse_modules_qat(model, [['conv', 'bn']])
    assert is_psbn(model.bn)


# --- tracing -----------------------------------------------------------------
def _layer_of(node):
    return node.target.rsplit('.', 1)[0]


def _bn_view(graph_module, model):
    """The node list of ``model``'s graph with each traced ps layer (its
    ``get_attr`` nodes, ``add(bias, alpha)`` and BN's ``batch_norm`` call)
    written as the ``call_module`` node BN gives; checks that shape on the
    way."""
    nodes = []
    for node in graph_module.graph.nodes:
        if node.op == 'get_attr':
            continue
        if (node.op == 'call_function' and node.target is operator.add
                and all(arg.op == 'get_attr' for arg in node.args)):
            bias, alpha = node.args
            layer = _layer_of(bias)
            assert (bias.target, alpha.target) == (layer + '.bias',
                                                   layer + '.alpha')
            assert is_psbn(model.get_submodule(layer))
            continue
        if node.op == 'call_function' and node.target is F.batch_norm:
            _, mean, var = node.args
            weight, bias = node.kwargs['weight'], node.kwargs['bias']
            layer = _layer_of(mean)
            assert [mean.target, var.target, weight.target] == [
                f'{layer}.running_mean', f'{layer}.running_var',
                f'{layer}.weight'
            ]
            assert bias.target is operator.add  # the only shift
            nodes.append(('call_module', layer))
            continue
        nodes.append((node.op, str(node.target)))
    return nodes


def _check_fx(ps_model, bn_model, x):
    ps_graph = fx.symbolic_trace(ps_model)
    bn_graph = fx.symbolic_trace(bn_model)
    bn_nodes = [(n.op, str(n.target)) for n in bn_graph.graph.nodes]
    assert _bn_view(ps_graph, ps_model) == bn_nodes
    shifts = [
        n for n in ps_graph.graph.nodes
        if n.target is operator.add and all(arg.op == 'get_attr'
                                            for arg in n.args)
    ]
    assert len(shifts) == len(_norm_layers(ps_model))
    return ps_graph


@pytest.fixture(scope='module')
def r50_pair():
    """The RetinaNet backbone (mmdet ResNet-50 as in retinanet_r50_fpn)."""
    kwargs = dict(frozen_stages=1, norm_eval=True, style='pytorch')
    ps = randomize_bn(
        _resnet(50, dict(type='psBN', alpha=ALPHA, requires_grad=True),
                **kwargs),
        seed=7)
    bn = _resnet(50, dict(type='BN', requires_grad=True), **kwargs)
    ps.eval()  # mmdet's ResNet.train() returns None: no chaining
    bn.eval()
    return ps, bn


def test_fx_traces_psbn_resnet_as_bn_plus_the_shift(r50_pair):
    ps, bn = r50_pair
    x = tiny_input(shape=(1, 3, 64, 64))
    traced = _check_fx(ps, bn, x)
    for out, ref in zip(_eval_out(traced, x), _eval_out(ps, x)):
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize('cls',
                         [PostShiftedBatchNorm2d, PostShiftedSyncBatchNorm])
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_fx_traces_psbn_in_eval_and_train(cls, training):
    bn_cls = nn.SyncBatchNorm if cls is PostShiftedSyncBatchNorm \
        else nn.BatchNorm2d
    x = tiny_input()
    ps = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3),
                                    cls(4, alpha=ALPHA))).train(training)
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), bn_cls(4)).train(training)
    eager = copy.deepcopy(ps)
    traced = _check_fx(ps, bn, x)
    torch.testing.assert_close(traced(x), eager(x))
    # Training: the graph updates the running statistics as BN does.
    # (fx runs BN's num_batches_tracked += 1 once, at trace time.)
    for name in ('running_mean', 'running_var'):
        torch.testing.assert_close(
            getattr(ps[1], name), getattr(eager[1], name))
    # Affine-free layers trace too (alpha alone, in the input's dtype).
    bare = nn.Sequential(
        cls(3, alpha=ALPHA, affine=False, track_running_stats=False))
    torch.testing.assert_close(fx.symbolic_trace(bare)(x), bare(x))


def test_fx_refuses_what_it_would_bake_in():
    """Momentum=None in training: BN's cumulative average reads
    num_batches_tracked in Python, which a graph would freeze."""
    model = nn.Sequential(PostShiftedBatchNorm2d(3, momentum=None)).train()
    with pytest.raises(RuntimeError, match='momentum=None'):
        fx.symbolic_trace(model)
    fx.symbolic_trace(model.eval())  # eval reads no momentum


def test_jit_trace_psbn_resnet(r50_pair):
    ps, _ = r50_pair
    x = tiny_input(shape=(1, 3, 64, 64))
    with torch.no_grad():
        traced = torch.jit.trace(ps, x)
    for out, ref in zip(_eval_out(traced, x), _eval_out(ps, x)):
        torch.testing.assert_close(out, ref)


def test_jit_script_refuses_with_the_fix():
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    torch.jit.script(bn)  # BN scripts
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _ps(4))
    with pytest.raises(RuntimeError, match=r'torch\.jit\.trace.*psbn2bn'):
        torch.jit.script(model)
    assert is_psbn(model[1])  # the model is left as it was


def test_onnx_export_psbn_resnet():
    pytest.importorskip('onnxscript')
    onnx = pytest.importorskip('onnx')
    from onnx.reference import ReferenceEvaluator
    model = randomize_bn(
        _resnet(18, dict(type='psBN', alpha=ALPHA), out_indices=(3, )), seed=8)
    model.eval()
    x = tiny_input(shape=(1, 3, 32, 32))
    program = torch.onnx.export(model, (x, ), dynamo=True, verbose=False)
    onnx.checker.check_model(program.model_proto)
    (out, ) = ReferenceEvaluator(program.model_proto).run(
        None, {program.model_proto.graph.input[0].name: x.numpy()})
    torch.testing.assert_close(
        torch.from_numpy(out), _eval_out(model, x)[0], rtol=1e-4, atol=1e-4)


# --- psBN checkpoints into BN models -----------------------------------------
def _save_psbn_checkpoint(path, model):
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), path)
    return str(path)


def test_bn_model_loading_psbn_checkpoint_upstream_drops_alpha(tmp_path):
    """What mmengine does with no hook: a warning, and other outputs."""
    ps_model = randomize_bn(TinyNet(_ps), seed=9)
    ckpt = _save_psbn_checkpoint(tmp_path / 'ps.pth', ps_model)
    bn_model = TinyNet()
    load_checkpoint(bn_model, ckpt, map_location='cpu', strict=False)
    x = tiny_input()
    assert not torch.allclose(_eval_out(bn_model, x), _eval_out(ps_model, x))


def test_fold_psbn_entries_on_load(tmp_path):
    x = tiny_input()
    ps_model = randomize_bn(TinyNet(_ps), seed=9)
    ckpt = _save_psbn_checkpoint(tmp_path / 'ps.pth', ps_model)
    # One layer stays psBN in the loading model: its entry is its own.
    bn_model = TinyNet()
    bn_model.layer1[1].bn2 = PostShiftedBatchNorm2d(6, alpha=0.2)
    fold_psbn_entries_on_load(bn_model)
    with mock.patch.object(psbn_module, 'print_log') as log:
        # strict: not one unexpected or missing key
        load_checkpoint(bn_model, ckpt, map_location='cpu', strict=True)
    # (The other call: bn2, psBN, loads its alpha=0.05 entry as 0.2.)
    (message, ), _ = log.call_args_list[0]
    assert message.startswith('psBN checkpoint entries for 6 layers that '
                              'are plain BN in this model (first: bn1)')
    assert 'alpha=0.05' in message and 'tools/psbn2bn.py' in message
    torch.testing.assert_close(
        _eval_out(bn_model, x), _eval_out(ps_model, x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn_model.bn1.bias, ps_model.bn1.bias + ALPHA)
    assert bn_model.layer1[1].bn2.alpha.item() == pytest.approx(0.2)
    # torch's own loader folds too; a BN checkpoint: nothing to fold.
    with mock.patch.object(psbn_module, 'print_log') as log:
        res = bn_model.load_state_dict(ps_model.state_dict())
        assert not res.missing_keys and not res.unexpected_keys
        bn_model.load_state_dict(TinyNet().state_dict(), strict=False)
    assert [c.args[0][:24]
            for c in log.call_args_list] == ['psBN checkpoint entries ']


def test_fold_psbn_entries_refuses_a_bn_layer_without_bias():
    ps = nn.Sequential(nn.Conv2d(3, 3, 1), _ps(3, affine=False))
    bn = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, affine=False))
    fold_psbn_entries_on_load(bn)
    with pytest.raises(
            ValueError,
            match=r"'1': a psBN .*BatchNorm2d layer has no bias"
            r".*type='psBN'"):
        bn.load_state_dict(ps.state_dict())
