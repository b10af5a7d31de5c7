# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""psBN itself: the maths, the mechanism, validation, checkpoints, converters
and deploy folding. Pure torch + mmengine; the mmdet models are in
``test_psbn_mmdet.py``, the upstream patches in ``test_psbn_upstream.py``."""
import copy
import re
import subprocess
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model.utils import _BatchNormXd
from mmengine.registry import MODELS, DefaultScope, Registry
from torch.overrides import TorchFunctionMode

from mmdet_psbn.models.layers import (PostShiftedBatchNorm2d,
                                      PostShiftedSyncBatchNorm,
                                      convert_to_psbn, find_psbn_prefixes,
                                      fold_psbn_state_dict, is_psbn)
from .psbn_helpers import TinyNet, randomize_bn, tiny_input

ALPHA = 0.3

LAYER_KWARGS = [
    dict(),
    dict(affine=False),
    dict(track_running_stats=False),
    dict(affine=False, track_running_stats=False),
    dict(bias=False),  # affine weight, no bias (torch >= 2.x keyword)
    dict(momentum=None, eps=1e-3),
]


def _pair(kwargs, alpha=ALPHA, cls=PostShiftedBatchNorm2d):
    """A BN layer and a ps layer with identical (random) parameters."""
    bn = randomize_bn(nn.BatchNorm2d(3, **kwargs))
    ps = cls(3, alpha=alpha, **kwargs)
    with torch.no_grad():
        for name, t in bn.named_parameters():
            getattr(ps, name).copy_(t)
        for name, t in bn.named_buffers():
            getattr(ps, name).copy_(t)
    return bn, ps


class _RecordOps(TorchFunctionMode):
    """Record every torch function called, with its output shape."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        self.calls.append((getattr(func, '__name__', str(func)), shape))
        return out


# --- the maths ---------------------------------------------------------------
@pytest.mark.parametrize('shape', [(4, 3, 5, 5), (2, 3, 1, 2)])
@pytest.mark.parametrize('kwargs', LAYER_KWARGS, ids=str)
@pytest.mark.parametrize('cls',
                         [PostShiftedBatchNorm2d, PostShiftedSyncBatchNorm])
def test_forward_backward_is_bn_plus_alpha(cls, kwargs, shape):
    bn, ps = _pair(kwargs, cls=cls)
    beta = ps._parameters['bias']
    for training in (True, False, True):
        bn.train(training)
        ps.train(training)
        x = torch.randn(shape).requires_grad_()
        x_ps = x.detach().clone().requires_grad_()
        out_bn, out_ps = bn(x), ps(x_ps)
        torch.testing.assert_close(out_ps, out_bn + ALPHA)
        grad = torch.randn(shape)
        out_bn.backward(grad)
        out_ps.backward(grad)
        torch.testing.assert_close(x_ps.grad, x.grad)
        for name, p in bn.named_parameters():
            torch.testing.assert_close(getattr(ps, name).grad, p.grad)
        for name, b in bn.named_buffers():
            torch.testing.assert_close(getattr(ps, name), b, rtol=0, atol=0)
    # The parameter is still beta itself, not beta + alpha.
    assert ps._parameters['bias'] is beta
    assert ps.alpha.item() == pytest.approx(ALPHA)


def test_shift_is_inside_the_single_batch_norm_call():
    """No extra pass over the activation: the only activation-sized result
    is batch_norm's (a naive ``bn(x) + alpha`` adds a second)."""
    x = torch.randn(2, 3, 4, 4)
    for kwargs in LAYER_KWARGS:
        _, ps = _pair(kwargs)
        with _RecordOps() as rec:
            ps(x)
        big = [name for name, shape in rec.calls if shape == tuple(x.shape)]
        assert big == ['batch_norm'], (kwargs, rec.calls)


def test_bias_restored_when_forward_raises():
    ps = PostShiftedBatchNorm2d(3)
    beta = ps.bias
    with pytest.raises(ValueError, match='4D'):
        ps(torch.randn(3, 5))
    assert ps._parameters['bias'] is beta
    assert isinstance(ps.bias, nn.Parameter)


@pytest.mark.parametrize('kwargs', LAYER_KWARGS, ids=str)
def test_autocast_and_no_grad_like_bn(kwargs):
    bn, ps = _pair(kwargs)
    conv = nn.Conv2d(3, 3, 1)
    x = torch.randn(2, 3, 4, 4)
    for training in (True, False):
        bn.train(training)
        ps.train(training)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out_bn, out_ps = bn(conv(x)), ps(conv(x))
        assert out_ps.dtype == out_bn.dtype == torch.bfloat16
        torch.testing.assert_close(
            out_ps.float(), out_bn.float() + ALPHA, atol=0.05, rtol=0.02)
        # bf16 input into fp32 parameters (BN's mixed-precision path)
        assert ps(x.bfloat16()).dtype == bn(x.bfloat16()).dtype
    with torch.no_grad():
        out = ps(x)
    assert out.grad_fn is None
    torch.testing.assert_close(out, bn(x).detach() + ALPHA)


# --- the paper's mechanism ---------------------------------------------------
def _dead_channel_run(layer, x, eta, lam, steps):
    """Plain SGD with weight decay on ``relu(layer(x))``; return the ratio
    (beta + alpha) / |gamma| before each step and the first active step."""
    opt = torch.optim.SGD(layer.parameters(), lr=eta, weight_decay=lam)
    alpha = layer.alpha.item() if is_psbn(layer) else 0.0
    ratios, first_active = [], None
    for t in range(steps):
        ratios.append((layer.bias.item() + alpha) / abs(layer.weight.item()))
        out = F.relu(layer(x))
        if first_active is None and bool((out > 0).any()):
            first_active = t
        opt.zero_grad()
        out.sum().backward()
        if first_active is None:
            # Dead: the data gradient really is zero; only decay acts.
            assert layer.weight.grad.abs().max().item() == 0
            assert layer.bias.grad.abs().max().item() == 0
        opt.step()
    return ratios, first_active


def test_dead_channel_recovers_under_weight_decay_as_predicted():
    # alpha exact in float32 (the buffer's dtype before .double()).
    eta, lam, alpha, gamma0, margin = 0.5, 0.1, 0.125, 1.0, 0.15
    x = torch.randn(
        8,
        1,
        2,
        2,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0))
    # Largest normalised value: the channel is alive iff C > -x_hat_max.
    x_hat_max = F.batch_norm(x, None, None, training=True).max().item()
    c0 = -x_hat_max - margin  # (beta + alpha) / |gamma| deep in the dead zone

    # The law: C_{t+1} = C_t + eta*lam/(1-eta*lam) * alpha/|gamma_t|,
    # gamma_t = (1-eta*lam)^t gamma_0; first active t: C_t > -x_hat_max.
    law, gamma, predicted = [c0], gamma0, None
    while predicted is None:
        if law[-1] > -x_hat_max:
            predicted = len(law) - 1
        law.append(law[-1] + eta * lam / (1 - eta * lam) * alpha / gamma)
        gamma *= 1 - eta * lam
    # Not a borderline case that float rounding could flip.
    assert law[predicted] + x_hat_max > 1e-4
    assert law[predicted - 1] + x_hat_max < -1e-4
    assert predicted > 5

    ps = PostShiftedBatchNorm2d(1, alpha=alpha).double()
    bn = nn.BatchNorm2d(1).double()
    with torch.no_grad():
        for layer, shift in ((ps, alpha), (bn, 0.0)):
            layer.weight.fill_(gamma0)
            layer.bias.fill_(c0 * gamma0 - shift)
    ratios, first_active = _dead_channel_run(ps, x, eta, lam, predicted + 3)
    np.testing.assert_allclose(
        ratios[:predicted + 1], law[:predicted + 1], rtol=1e-9)
    assert first_active == predicted

    # BN: gamma and beta decay alike, the ratio never moves, never revives.
    ratios, first_active = _dead_channel_run(bn, x, eta, lam, 3 * predicted)
    np.testing.assert_allclose(ratios, [c0] * len(ratios), rtol=1e-9)
    assert first_active is None


# --- validation, repr, registry ----------------------------------------------
@pytest.mark.parametrize('alpha', [
    0, 0.0, -0.1,
    float('nan'),
    float('inf'), -float('inf'), True, False, '0.1', None, [0.1],
    torch.tensor(0.1)
])
def test_bad_alpha_is_a_value_error_showing_it(alpha):
    for cls in (PostShiftedBatchNorm2d, PostShiftedSyncBatchNorm):
        with pytest.raises(ValueError, match=re.escape(repr(alpha))):
            cls(4, alpha=alpha)
    with pytest.raises(ValueError, match=re.escape(repr(alpha))):
        MODELS.build(dict(type='psBN', num_features=4, alpha=alpha))


@pytest.mark.parametrize('alpha', [1, 0.05, np.float32(0.2), 1e-6])
def test_good_alpha(alpha):
    layer = PostShiftedBatchNorm2d(4, alpha=alpha)
    assert layer.alpha.item() == pytest.approx(float(alpha))
    assert layer.alpha.dtype == torch.float32 and layer.alpha.dim() == 0


def test_unknown_keyword_is_bn_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpa'"):
        PostShiftedBatchNorm2d(4, alpa=0.1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        MODELS.build(dict(type='psSyncBN', num_features=4, foo=1))


def test_extra_repr_shows_alpha():
    assert repr(PostShiftedBatchNorm2d(
        4, alpha=0.05)).endswith('track_running_stats=True, alpha=0.05)')
    assert 'alpha=0.1)' in repr(PostShiftedSyncBatchNorm(4))


def test_registered_in_root_and_found_from_a_child_scope():
    assert MODELS.get('psBN') is PostShiftedBatchNorm2d
    assert MODELS.get('psSyncBN') is PostShiftedSyncBatchNorm
    # An mmpretrain-like scope: its own registry, child of mmengine's root.
    child = MODELS.children.get('mmpretrain_like') or Registry(
        'model', parent=MODELS, scope='mmpretrain_like')
    with DefaultScope.overwrite_default_scope('mmpretrain_like'):
        layer = child.build(dict(type='psBN', num_features=4, alpha=0.05))
    assert type(layer) is PostShiftedBatchNorm2d
    assert layer.alpha.item() == pytest.approx(0.05)


def test_builds_with_no_scope_after_import_alone():
    """A fresh process: ``import mmdet_psbn`` and mmcv's build_norm_layer,
    with no default scope at all."""
    code = textwrap.dedent("""
        import mmdet_psbn
        from mmcv.cnn import build_norm_layer
        from mmengine.registry import DefaultScope
        assert DefaultScope.get_current_instance() is None
        name, layer = build_norm_layer(dict(type='psBN', alpha=0.05), 8, 1)
        print(name, type(layer).__name__, round(layer.alpha.item(), 6))
        name, layer = build_norm_layer(dict(type='psSyncBN'), 8, 2)
        print(name, type(layer).__name__, round(layer.alpha.item(), 6))
    """)
    res = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split('\n')[:2] == [
        'bn1 PostShiftedBatchNorm2d 0.05', 'bn2 PostShiftedSyncBatchNorm 0.1'
    ]


# --- checkpoints -------------------------------------------------------------
def _strip(state_dict):
    """What many converters do: a plain dict, no ``_metadata``."""
    stripped = OrderedDict(state_dict)
    assert not hasattr(stripped, '_metadata')
    return stripped


def _eval_out(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize('strip', [False, True], ids=['metadata', 'stripped'])
def test_psbn_checkpoint_round_trips_exactly(strip):
    src = randomize_bn(TinyNet(PostShiftedBatchNorm2d), seed=3)
    sd = src.state_dict()
    assert 'bn1.alpha' in sd and 'layer1.0.downsample.1.alpha' in sd
    dst = TinyNet(PostShiftedBatchNorm2d)
    res = dst.load_state_dict(_strip(sd) if strip else sd)
    assert not res.missing_keys and not res.unexpected_keys
    for key, value in dst.state_dict().items():
        assert torch.equal(value, sd[key]), key


@pytest.mark.parametrize('strip', [False, True], ids=['metadata', 'stripped'])
@pytest.mark.parametrize(
    'drop_nbt', [False, True], ids=['nbt', 'no_num_batches_tracked'])
def test_bn_checkpoint_into_psbn_preserves_function(strip, drop_nbt):
    """ImageNet-style BN weights: no ``alpha`` key, maybe no metadata (then
    BN's version is unknown) and no num_batches_tracked (old torchvision)."""
    x = tiny_input()
    bn_model = randomize_bn(TinyNet(), seed=4)
    sd = bn_model.state_dict()
    assert sd._metadata['bn1']['version'] == 2  # BN says 2, like psBN
    if drop_nbt:
        sd = OrderedDict((k, v) for k, v in sd.items()
                         if not k.endswith('num_batches_tracked'))
    if strip:
        sd = _strip(sd)
    before = {k: v.clone() for k, v in sd.items()}
    ps_model = TinyNet(PostShiftedBatchNorm2d)
    res = ps_model.load_state_dict(sd)
    assert not res.missing_keys and not res.unexpected_keys
    torch.testing.assert_close(
        _eval_out(ps_model, x), _eval_out(bn_model, x), rtol=1e-6, atol=1e-6)
    assert ps_model.bn1.alpha.item() == pytest.approx(0.1)
    torch.testing.assert_close(ps_model.bn1.bias + 0.1, bn_model.bn1.bias)
    for key, value in sd.items():  # the caller's tensors are untouched
        assert torch.equal(value, before[key]), key


def test_other_alpha_checkpoint_preserves_function_and_keeps_alpha():
    x = tiny_input()
    src = randomize_bn(
        TinyNet(lambda c: PostShiftedBatchNorm2d(c, alpha=0.05)), seed=5)
    dst = TinyNet(lambda c: PostShiftedBatchNorm2d(c, alpha=0.2))
    res = dst.load_state_dict(_strip(src.state_dict()))
    assert not res.missing_keys and not res.unexpected_keys
    assert dst.bn1.alpha.item() == pytest.approx(0.2)
    torch.testing.assert_close(
        _eval_out(dst, x), _eval_out(src, x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dst.bn1.bias + 0.2, src.bn1.bias + 0.05)


def test_layer_without_bias_warns_on_bn_checkpoint():
    bn = randomize_bn(nn.BatchNorm2d(3, affine=False))
    ps = PostShiftedBatchNorm2d(3, affine=False)
    with pytest.warns(UserWarning, match='without bias.*alpha=0.1'):
        res = ps.load_state_dict(bn.state_dict())
    assert not res.missing_keys and not res.unexpected_keys
    x = tiny_input(shape=(2, 3, 4, 4))
    torch.testing.assert_close(_eval_out(ps, x), _eval_out(bn, x) + 0.1)
    ps_other = PostShiftedBatchNorm2d(3, affine=False, alpha=0.2)
    with pytest.warns(UserWarning, match='alpha=0.1 loaded .*alpha=0.2'):
        ps_other.load_state_dict(ps.state_dict())


def test_checkpoint_missing_a_layer_reports_it():
    ps = PostShiftedBatchNorm2d(3)
    res = ps.load_state_dict({}, strict=False)
    bn_res = nn.BatchNorm2d(3).load_state_dict({}, strict=False)
    assert sorted(res.missing_keys) == sorted(bn_res.missing_keys + ['alpha'])


# --- converters --------------------------------------------------------------
class _FrozenBN(nn.BatchNorm2d):
    """A BN subclass with behaviour of its own: must not be converted."""


def test_convert_to_psbn_preserves_function_and_attributes():
    x = tiny_input()
    model = randomize_bn(TinyNet(), seed=6)
    model.layer1[1].bn2 = randomize_bn(_FrozenBN(6))
    model.bn1.weight.requires_grad_(False)
    model.eval()
    model.layer1[0].train()
    expected = _eval_out(copy.deepcopy(model), x)

    converted = convert_to_psbn(model, alpha=0.05)
    assert converted is model
    kinds = {type(m) for m in model.modules()}
    assert nn.BatchNorm2d not in kinds and _FrozenBN in kinds
    assert type(model.layer1[0].downsample[1]) is PostShiftedBatchNorm2d
    assert model.layer1[0].bn1.training and not model.bn1.training
    assert not model.bn1.weight.requires_grad and model.bn1.bias.requires_grad
    assert model.bn1.alpha.item() == pytest.approx(0.05)
    torch.testing.assert_close(
        _eval_out(model, x), expected, rtol=1e-6, atol=1e-6)


def test_convert_root_layer_and_sync_layer():
    bn = randomize_bn(nn.BatchNorm2d(3))
    new = convert_to_psbn(bn)
    assert type(new) is PostShiftedBatchNorm2d
    xd = convert_to_psbn(_BatchNormXd(3))
    assert type(xd) is PostShiftedBatchNorm2d
    group = object()  # any process group object is carried over
    sync = convert_to_psbn(nn.SyncBatchNorm(3, process_group=group))
    assert type(sync) is PostShiftedSyncBatchNorm
    assert sync.process_group is group
    with pytest.raises(ValueError, match='-1'):
        convert_to_psbn(nn.BatchNorm2d(3), alpha=-1)


def test_sync_convert_and_revert_share_tensors_and_keep_alpha():
    x = tiny_input()
    model = randomize_bn(
        TinyNet(lambda c: PostShiftedBatchNorm2d(c, alpha=0.05)), seed=7)
    expected = _eval_out(model, x)
    old_bn1 = model.bn1
    model = PostShiftedSyncBatchNorm.convert_sync_psbn(model)
    layers = [m for m in model.modules() if is_psbn(m)]
    assert layers and all(type(m) is PostShiftedSyncBatchNorm for m in layers)
    assert model.bn1.weight is old_bn1.weight
    assert model.bn1.alpha is old_bn1.alpha
    assert model.bn1.alpha.item() == pytest.approx(0.05)
    torch.testing.assert_close(_eval_out(model, x), expected)

    model = PostShiftedSyncBatchNorm.revert_sync_psbn(model)
    assert all(
        type(m) is PostShiftedBatchNorm2d for m in model.modules()
        if is_psbn(m))
    assert model.bn1.weight is old_bn1.weight
    torch.testing.assert_close(_eval_out(model, x), expected)

    root = PostShiftedSyncBatchNorm.convert_sync_psbn(
        PostShiftedBatchNorm2d(3, alpha=0.2))
    assert type(root) is PostShiftedSyncBatchNorm
    assert root.alpha.item() == pytest.approx(0.2)
    back = PostShiftedSyncBatchNorm.revert_sync_psbn(root)
    assert type(back) is PostShiftedBatchNorm2d


# --- deploy folding ----------------------------------------------------------
@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_fold_gives_a_bn_state_dict_with_the_same_function(prefix):
    x = tiny_input()
    ps_model = randomize_bn(
        TinyNet(lambda c: PostShiftedBatchNorm2d(c, alpha=0.05)), seed=8)
    sd = OrderedDict((prefix + k, v) for k, v in ps_model.state_dict().items())
    before = {k: v.clone() for k, v in sd.items()}
    assert len(find_psbn_prefixes(sd)) == 7
    folded = fold_psbn_state_dict(sd)
    assert not any(k.endswith('alpha') for k in folded)
    bn_model = TinyNet()
    res = bn_model.load_state_dict(
        OrderedDict((k[len(prefix):], v) for k, v in folded.items()))
    assert not res.missing_keys and not res.unexpected_keys
    # The very sum psBN's forward computes: identical outputs.
    assert torch.equal(_eval_out(bn_model, x), _eval_out(ps_model, x))
    for key, value in sd.items():
        assert torch.equal(value, before[key]), key


def test_fold_keeps_metadata_and_refuses_what_it_cannot_fold():
    sd = PostShiftedBatchNorm2d(3).state_dict()
    assert fold_psbn_state_dict(sd)._metadata == sd._metadata
    with pytest.raises(ValueError, match='no psBN layer found'):
        fold_psbn_state_dict(nn.BatchNorm2d(3).state_dict())
    no_bias = nn.Sequential(
        nn.Conv2d(3, 3, 1), PostShiftedBatchNorm2d(3, affine=False))
    with pytest.raises(ValueError, match="'1' has no bias"):
        fold_psbn_state_dict(no_bias.state_dict())
    # An unrelated 'alpha' (a learnable scalar next to no BN) is not psBN.
    assert find_psbn_prefixes({'gate.alpha': torch.tensor(1.0)}) == []


def test_torch_compile_traces_the_forward():
    """The bias swap inside forward is captured by dynamo (no graph break
    changes the result) and trains beta."""
    torch._dynamo.reset()
    _, ps = _pair({})
    eager = copy.deepcopy(ps)
    compiled = torch.compile(ps, backend='aot_eager')
    x = torch.randn(2, 3, 4, 4)
    out, ref = compiled(x), eager(x)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(ps.bias.grad, eager.bias.grad)
    assert isinstance(ps._parameters['bias'], nn.Parameter)
