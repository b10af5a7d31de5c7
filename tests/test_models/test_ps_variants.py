# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The post-shifted variants (psBN1d, psBN3d, psGN, psIN...): each keeps psBN's
contract (docs/variants.md).

psBN (2d) and psSyncBN themselves are in
``test_psbn_layer.py``; here every test runs over every variant.
"""
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
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS, DefaultScope
from torch.overrides import TorchFunctionMode

from mmdet_psbn.analysis.collapse import layer_kind, measure_model
from mmdet_psbn.models import layers as ps_layers
from mmdet_psbn.models.layers import (convert_to_psbn, find_psbn_prefixes,
                                      fold_psbn_entries_on_load,
                                      fold_psbn_state_dict, is_post_shifted,
                                      is_psbn)
from .psbn_helpers import tiny_input

ALPHA = 0.3
C = 4
# One name a line: isort's and yapf's wrappings of the long import disagree.
PostShiftedBatchNorm1d = ps_layers.PostShiftedBatchNorm1d
PostShiftedBatchNorm2d = ps_layers.PostShiftedBatchNorm2d
PostShiftedBatchNorm3d = ps_layers.PostShiftedBatchNorm3d
PostShiftedGroupNorm = ps_layers.PostShiftedGroupNorm
PostShiftedInstanceNorm1d = ps_layers.PostShiftedInstanceNorm1d
PostShiftedInstanceNorm2d = ps_layers.PostShiftedInstanceNorm2d
PostShiftedInstanceNorm3d = ps_layers.PostShiftedInstanceNorm3d
PostShiftedSyncBatchNorm = ps_layers.PostShiftedSyncBatchNorm


class Variant:
    """One ps layer and its plain counterpart, as mmcv names them."""

    def __init__(self, ps_name, cls, plain_name, plain, shapes, **cfg):
        self.ps_name, self.cls = ps_name, cls
        self.plain_name, self.plain = plain_name, plain
        self.shapes, self.cfg = shapes, cfg

    def __repr__(self):
        return self.ps_name

    def pair(self, alpha=ALPHA, seed=0):
        """A plain layer with random state and a ps layer with the same."""
        plain = _randomize(self.plain(), seed)
        ps = self.cls(C, alpha=alpha, **self.cfg)
        with torch.no_grad():
            for name, t in plain.named_parameters():
                getattr(ps, name).copy_(t)
            for name, t in plain.named_buffers():
                getattr(ps, name).copy_(t)
        return plain, ps


VARIANTS = [
    Variant('psBN1d', PostShiftedBatchNorm1d, 'BN1d',
            lambda: nn.BatchNorm1d(C), [(6, C), (3, C, 5)]),
    Variant('psBN2d', PostShiftedBatchNorm2d, 'BN2d',
            lambda: nn.BatchNorm2d(C), [(3, C, 3, 3)]),
    Variant('psBN3d', PostShiftedBatchNorm3d, 'BN3d',
            lambda: nn.BatchNorm3d(C), [(2, C, 3, 2, 2)]),
    Variant(
        'psGN',
        PostShiftedGroupNorm,
        'GN',
        lambda: nn.GroupNorm(2, C), [(3, C, 3, 3), (2, C, 5)],
        num_groups=2),
    Variant(
        'psIN1d',
        PostShiftedInstanceNorm1d,
        'IN1d',
        lambda: nn.InstanceNorm1d(C, affine=True), [(3, C, 5)],
        affine=True),
    Variant(
        'psIN',
        PostShiftedInstanceNorm2d,
        'IN',
        lambda: nn.InstanceNorm2d(C, affine=True, track_running_stats=True),
        [(3, C, 3, 3)],
        affine=True,
        track_running_stats=True),
    Variant(
        'psIN3d',
        PostShiftedInstanceNorm3d,
        'IN3d',
        lambda: nn.InstanceNorm3d(C, affine=True), [(2, C, 3, 2, 2)],
        affine=True),
]
#: The one call of the plain layer that produces the activation.
NORM_CALL = dict(BN='batch_norm', GN='group_norm', IN='instance_norm')


def _randomize(layer, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(C, generator=gen) + 0.5)
        layer.bias.copy_(torch.randn(C, generator=gen) * 0.3)
        if layer._buffers.get('running_mean') is not None:
            layer.running_mean.copy_(torch.randn(C, generator=gen) * 0.2)
            layer.running_var.copy_(torch.rand(C, generator=gen) + 0.5)
    return layer


def _x(shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _eval(layer, x):
    with torch.no_grad():
        return layer.eval()(x)


def _strip(state_dict):
    return OrderedDict(state_dict)  # no _metadata, as many converters do


variants = pytest.mark.parametrize('v', VARIANTS, ids=repr)


# --- the maths ---------------------------------------------------------------
@variants
def test_forward_backward_is_plain_plus_alpha(v):
    plain, ps = v.pair()
    beta = ps._parameters['bias']
    for shape in v.shapes:
        for training in (True, False, True):
            plain.train(training)
            ps.train(training)
            x = _x(shape).requires_grad_()
            x_ps = x.detach().clone().requires_grad_()
            out, out_ps = plain(x), ps(x_ps)
            torch.testing.assert_close(out_ps, out + ALPHA)
            grad = torch.randn(shape)
            out.backward(grad)
            out_ps.backward(grad)
            torch.testing.assert_close(x_ps.grad, x.grad)
            for name, p in plain.named_parameters():
                torch.testing.assert_close(getattr(ps, name).grad, p.grad)
                p.grad = getattr(ps, name).grad = None
            for name, b in plain.named_buffers():
                torch.testing.assert_close(getattr(ps, name), b)
    assert ps._parameters['bias'] is beta  # beta itself, not beta + alpha


class _RecordOps(TorchFunctionMode):

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        self.calls.append((getattr(func, '__name__', str(func)), shape))
        return out


@variants
def test_shift_is_inside_the_single_norm_call(v):
    """The plain forward once, with beta + alpha: a naive ``plain(x) + alpha``
    makes a second activation-sized tensor."""
    _, ps = v.pair()
    x = _x(v.shapes[-1])
    with _RecordOps() as rec:
        ps(x)
    big = [name for name, shape in rec.calls if shape == tuple(x.shape)]
    assert big == [NORM_CALL[v.plain_name.rstrip('123d')]], rec.calls


def test_group_norm_without_affine_still_shifts():
    x = _x((2, C, 3))
    ps = PostShiftedGroupNorm(C, num_groups=2, affine=False, alpha=ALPHA)
    torch.testing.assert_close(ps(x), F.group_norm(x, 2) + ALPHA)


# --- construction: registry, build_norm_layer, validation --------------------
@variants
def test_registered_and_built_by_build_norm_layer_in_the_mmdet_scope(v):
    import mmdet.models  # noqa: F401  registers mmdet's scope
    assert MODELS.get(v.ps_name) is v.cls
    cfg = dict(v.cfg)
    cfg.pop('affine', None)
    with DefaultScope.overwrite_default_scope('mmdet'):
        name, layer = build_norm_layer(
            dict(type=v.ps_name, alpha=0.05, affine=True, **cfg), C, 2)
        plain_name, plain = build_norm_layer(
            dict(type=v.plain_name, affine=True, **cfg), C, 2)
    assert type(layer) is v.cls and layer.alpha.item() == pytest.approx(0.05)
    assert name == plain_name  # 'bn2', 'gn2', 'in2': checkpoints' prefixes
    assert name[:2] in ('bn', 'gn', 'in')
    plain_keys = set(plain.state_dict())
    assert set(layer.state_dict()) == plain_keys | {'alpha'}


def test_aliases_and_kinds():
    assert MODELS.get('psBN2d') is MODELS.get('psBN') is PostShiftedBatchNorm2d
    assert MODELS.get('psIN2d') is MODELS.get(
        'psIN') is PostShiftedInstanceNorm2d
    for v in VARIANTS:
        _, ps = v.pair()
        assert is_post_shifted(ps)
        assert is_psbn(ps) == v.ps_name.startswith('psBN')
        assert layer_kind(ps) == ('psBN'
                                  if v.ps_name == 'psBN2d' else v.ps_name)


def test_all_build_with_no_scope_after_import_alone():
    """A fresh process, no default scope: ``import mmdet_psbn`` is enough."""
    code = textwrap.dedent("""
        import mmdet_psbn
        from mmcv.cnn import build_norm_layer
        from mmengine.registry import DefaultScope
        assert DefaultScope.get_current_instance() is None
        for cfg in [dict(type='psBN1d'), dict(type='psBN2d'),
                    dict(type='psBN3d'), dict(type='psGN', num_groups=2),
                    dict(type='psIN', affine=True),
                    dict(type='psIN1d', affine=True),
                    dict(type='psIN3d', affine=True)]:
            name, layer = build_norm_layer(cfg, 4, 1)
            print(name, type(layer).__name__)
    """)
    res = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split('\n')[:7] == [
        'bn1 PostShiftedBatchNorm1d', 'bn1 PostShiftedBatchNorm2d',
        'bn1 PostShiftedBatchNorm3d', 'gn1 PostShiftedGroupNorm',
        'in1 PostShiftedInstanceNorm2d', 'in1 PostShiftedInstanceNorm1d',
        'in1 PostShiftedInstanceNorm3d'
    ]


@variants
@pytest.mark.parametrize(
    'alpha', [0, -0.1, float('nan'),
              float('inf'), True, '0.1', None],
    ids=repr)
def test_bad_alpha_is_refused_showing_it(v, alpha):
    with pytest.raises(ValueError, match=re.escape(repr(alpha))):
        v.cls(C, alpha=alpha, **v.cfg)
    with pytest.raises(ValueError, match='finite positive real number'):
        build_norm_layer(dict(type=v.ps_name, alpha=alpha, **v.cfg), C)


def test_gn_refuses_torch_argument_order_and_in_refuses_affine_false():
    with pytest.raises(TypeError):
        PostShiftedGroupNorm(2, C)  # nn.GroupNorm(num_groups, num_channels)
    assert PostShiftedGroupNorm(8, num_groups=2).num_channels == 8
    for cls in (PostShiftedInstanceNorm1d, PostShiftedInstanceNorm2d,
                PostShiftedInstanceNorm3d):
        with pytest.raises(ValueError, match=r'affine=True'):
            cls(C)  # torch's default affine=False
    with pytest.raises(ValueError, match=r"dict\(type='psIN', affine=True\)"):
        build_norm_layer(dict(type='psIN'), C)


# --- checkpoints -------------------------------------------------------------
@variants
@pytest.mark.parametrize('strip', [False, True], ids=['metadata', 'stripped'])
def test_plain_checkpoint_loads_function_preserving(v, strip):
    plain, _ = v.pair(seed=3)
    ps = v.cls(C, alpha=ALPHA, **v.cfg)
    sd = plain.state_dict()
    res = ps.load_state_dict(_strip(sd) if strip else sd)
    assert not res.missing_keys and not res.unexpected_keys
    torch.testing.assert_close(ps.bias, plain.bias - ALPHA)
    assert ps.alpha.item() == pytest.approx(ALPHA)
    for shape in v.shapes:
        x = _x(shape)
        torch.testing.assert_close(_eval(ps, x), _eval(plain, x))


@variants
def test_ps_checkpoint_round_trips_and_other_alpha_preserves(v):
    _, src = v.pair(seed=4)
    sd = src.state_dict()
    dst = v.cls(C, alpha=ALPHA, **v.cfg)
    dst.load_state_dict(_strip(sd))
    for key, value in dst.state_dict().items():
        assert torch.equal(value, sd[key]), key
    other = v.cls(C, alpha=0.05, **v.cfg)
    other.load_state_dict(sd)
    assert other.alpha.item() == pytest.approx(0.05)
    x = _x(v.shapes[0])
    torch.testing.assert_close(_eval(other, x), _eval(src, x))


@variants
def test_fold_gives_the_plain_checkpoint_with_equal_outputs(v):
    _, ps = v.pair(seed=5)
    model = nn.Sequential(nn.Identity(), ps)
    sd = model.state_dict()
    assert find_psbn_prefixes(sd) == ['1.']
    folded = fold_psbn_state_dict(sd)
    plain = nn.Sequential(nn.Identity(), v.plain())
    plain.load_state_dict(folded)  # strict: nothing missing or unexpected
    assert '1.alpha' in sd and '1.alpha' not in folded
    # The plain model loading the unfolded psBN checkpoint, folded on load.
    plain_on_load = nn.Sequential(nn.Identity(), v.plain())
    fold_psbn_entries_on_load(plain_on_load)
    assert not plain_on_load.load_state_dict(sd).unexpected_keys
    for shape in v.shapes:
        x = _x(shape)
        expected = _eval(model, x)
        torch.testing.assert_close(_eval(plain, x), expected)
        torch.testing.assert_close(_eval(plain_on_load, x), expected)


def _fcos_head(norm_cfg):
    from mmdet.models.dense_heads import FCOSHead
    return FCOSHead(
        num_classes=3,
        in_channels=8,
        feat_channels=8,
        stacked_convs=2,
        strides=[8, 16],
        regress_ranges=((-1, 64), (64, 1e8)),
        norm_cfg=norm_cfg)


def test_fcos_gn_head_checkpoint_round_trip_and_fold(tmp_path):
    """Mmdet's FCOS head (GN + ReLU in its towers) with psGN: GN's names, a GN
    checkpoint loads function-preserving, the psbn2bn tool's output loads into
    the GN head strictly and computes what the psGN head did."""
    sys.path.insert(0, 'tools')
    try:
        import psbn2bn
    finally:
        sys.path.remove('tools')
    gn_head = _fcos_head(dict(type='GN', num_groups=4, requires_grad=True))
    ps_head = _fcos_head(dict(type='psGN', num_groups=4, requires_grad=True))
    assert type(ps_head.cls_convs[0].gn) is PostShiftedGroupNorm
    gn_keys, ps_keys = set(gn_head.state_dict()), set(ps_head.state_dict())
    alpha_keys = {k for k in ps_keys if k.endswith('.alpha')}
    assert alpha_keys == {
        f'{t}_convs.{i}.gn.alpha'
        for t in ('cls', 'reg')
        for i in range(2)
    }
    assert ps_keys - alpha_keys == gn_keys
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for m in gn_head.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.copy_(torch.rand(8, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(8, generator=gen) * 0.3)
    feats = [tiny_input(shape=(1, 8, 8, 8)), tiny_input(shape=(1, 8, 4, 4))]

    def outs(head):
        head.eval()
        with torch.no_grad():
            return [t for level in head(feats) for t in level]

    ps_head.load_state_dict(gn_head.state_dict())  # function-preserving
    for a, b in zip(outs(ps_head), outs(gn_head)):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # now a psGN head of its own
        for m in ps_head.modules():
            if isinstance(m, PostShiftedGroupNorm):
                m.bias.add_(torch.randn(8, generator=gen) * 0.2)
    src, dst = tmp_path / 'ps.pth', tmp_path / 'gn.pth'
    torch.save(dict(meta={}, state_dict=ps_head.state_dict()), src)
    psbn2bn.main([str(src), str(dst)])
    folded = torch.load(dst, weights_only=True)
    assert folded['meta']['psbn2bn']['num_layers'] == 4
    fresh = _fcos_head(dict(type='GN', num_groups=4))
    fresh.load_state_dict(folded['state_dict'])  # strict
    for a, b in zip(outs(fresh), outs(ps_head)):
        torch.testing.assert_close(a, b)


# --- converters --------------------------------------------------------------
def test_convert_to_psbn_1d_3d_and_gn_on_request():
    model = nn.Sequential(
        _randomize(nn.BatchNorm1d(C), 1),
        nn.Sequential(_randomize(nn.GroupNorm(2, C), 2)),
        _randomize(nn.BatchNorm3d(C), 3))
    x1, x3 = _x((5, C, 3)), _x((2, C, 2, 2, 2))

    def outs(m):
        m.eval()
        with torch.no_grad():
            return m[0](x1), m[1](x1), m[2](x3)

    expected = outs(model)
    model = convert_to_psbn(model, 0.2)
    assert [type(m) for m in (model[0], model[1][0], model[2])] == [
        PostShiftedBatchNorm1d, nn.GroupNorm, PostShiftedBatchNorm3d
    ]
    model = convert_to_psbn(model, 0.2, gn=True)
    assert type(model[1][0]) is PostShiftedGroupNorm
    assert model[1][0].num_groups == 2 and model[1][0].alpha.item() == \
        pytest.approx(0.2)
    for a, b in zip(outs(model), expected):
        torch.testing.assert_close(a, b)
    root = convert_to_psbn(nn.GroupNorm(2, C, affine=True), gn=True)
    assert type(root) is PostShiftedGroupNorm


@pytest.mark.parametrize(
    'cls,shape', [(PostShiftedBatchNorm1d, (5, C, 3)),
                  (PostShiftedBatchNorm1d, (5, C)),
                  (PostShiftedBatchNorm3d, (2, C, 2, 2, 2))],
    ids=['1d', '1d-NC', '3d'])
def test_sync_convert_and_revert_keep_the_dimension(cls, shape):
    from mmengine.model import convert_sync_batchnorm, revert_sync_batchnorm
    x = _x(shape)
    layer = _randomize(cls(C, alpha=0.2))
    gn = PostShiftedGroupNorm(C, num_groups=2, alpha=0.2)
    expected = _eval(layer, x)
    for convert, revert in (
        (PostShiftedSyncBatchNorm.convert_sync_psbn,
         PostShiftedSyncBatchNorm.revert_sync_psbn),
        (nn.SyncBatchNorm.convert_sync_batchnorm, revert_sync_batchnorm),
        (convert_sync_batchnorm, revert_sync_batchnorm),
    ):
        model = nn.Sequential(layer, gn)
        model = convert(model)
        assert type(model[0]) is PostShiftedSyncBatchNorm
        assert model[0].alpha is layer.alpha
        assert model[1] is gn  # GN needs no sync: left as it is
        model = revert(model)
        assert type(model[0]) is cls and model[1] is gn
        assert model[0].weight is layer.weight
        torch.testing.assert_close(_eval(model[0], x), expected)
        torch.testing.assert_close(model[0].alpha, layer.alpha)
    # A psSyncBN built as such reverts to psBN (2d), as before.
    built = PostShiftedSyncBatchNorm(C)
    assert type(PostShiftedSyncBatchNorm.revert_sync_psbn(
        built)) is PostShiftedBatchNorm2d


# --- upstream fusions --------------------------------------------------------
def _linear_bn1d():
    linear = nn.Linear(3, C).eval()
    bn = _randomize(PostShiftedBatchNorm1d(C, alpha=ALPHA)).eval()
    return linear, bn


def test_fuse_linear_bn_eval_upstream_drops_alpha():
    from torch.nn.utils import fusion
    linear, bn = _linear_bn1d()
    x = _x((5, 3))
    fused = fusion.fuse_linear_bn_eval.__wrapped__(linear, bn)
    with torch.no_grad():
        torch.testing.assert_close(fused(x) + ALPHA, bn(linear(x)))


def test_fusions_keep_alpha_for_1d_and_3d():
    from torch.ao.quantization import fuse_modules
    linear, bn = _linear_bn1d()
    x = _x((5, 3))
    with torch.no_grad():
        expected = bn(linear(x))
        for fuse in (torch.nn.utils.fuse_linear_bn_eval,
                     torch.nn.utils.fusion.fuse_linear_bn_eval):
            torch.testing.assert_close(fuse(linear, bn)(x), expected)
        model = nn.Sequential(linear, bn).eval()
        fused = fuse_modules(model, [['0', '1']])
        assert not any(is_psbn(m) for m in fused.modules())
        torch.testing.assert_close(fused(x), expected)
        for conv, bn, shape in (
            (nn.Conv1d(3, C, 3), PostShiftedBatchNorm1d, (2, 3, 6)),
            (nn.Conv3d(3, C, 1), PostShiftedBatchNorm3d, (2, 3, 2, 2, 2)),
        ):
            model = nn.Sequential(conv, _randomize(bn(C, alpha=ALPHA)),
                                  nn.ReLU()).eval()
            x = _x(shape)
            expected = model(x)
            fused = fuse_modules(model, [['0', '1', '2']])
            assert not any(is_psbn(m) for m in fused.modules())
            torch.testing.assert_close(fused(x), expected)


# --- analysis: the dead measure reads alpha ----------------------------------
def test_measure_model_reads_alpha_and_kind_of_every_variant():
    layers = nn.ModuleDict()
    for v in VARIANTS:
        ps = v.cls(C, alpha=0.5, **v.cfg)
        plain = v.plain()
        with torch.no_grad():
            # (beta + alpha)/|gamma| = 4 under ps: alive; -4 under plain:
            # dead (P(y > 0) = Phi(-4) < 1e-3).
            ps.weight.fill_(0.1)
            ps.bias.fill_(-0.1)
            plain.weight.fill_(0.1)
            plain.bias.fill_(-0.4)
        layers[v.ps_name] = ps
        layers[v.plain_name] = plain
    stats = measure_model(layers)
    rows = {r['name']: r for r in stats.per_layer()}
    for v in VARIANTS:
        row = rows[v.ps_name]
        assert row['kind'] == ('psBN' if v.ps_name == 'psBN2d' else v.ps_name)
        assert row['alpha'] == pytest.approx(0.5)
        assert row['dead'] == 0
        assert rows[v.plain_name]['alpha'] == 0
        assert rows[v.plain_name]['dead'] == C
    i = stats.names.index('psGN')
    np.testing.assert_allclose(stats.shifted_beta[stats.channels(i)], 0.4)


# --- weight-decay recovery of a dead GN channel ------------------------------
def _dead_run(layer, x, eta, lam, steps):
    """SGD with weight decay on relu(layer(x)).sum(): the ratio (beta +
    alpha)/|gamma| per channel before each step, the first step at which each
    channel fired (-1: never)."""
    alpha = layer.alpha.item() if is_post_shifted(layer) else 0.0
    opt = torch.optim.SGD(layer.parameters(), lr=eta, weight_decay=lam)
    ratios = np.empty((steps, C))
    first = np.full(C, -1)
    for t in range(steps):
        with torch.no_grad():
            ratios[t] = ((layer.bias + alpha) / layer.weight.abs()).numpy()
        y = F.relu(layer(x))
        fired = (y > 0).transpose(0, 1).flatten(1).any(1).numpy()
        first[(first < 0) & fired] = t
        opt.zero_grad()
        y.sum().backward()
        dead = torch.from_numpy(first < 0)
        # Dead channels get no data gradient: only weight decay acts.
        assert not layer.weight.grad[dead].any()
        assert not layer.bias.grad[dead].any()
        opt.step()
    return ratios, first


def _law(c0, gamma0, alpha, eta, lam, steps):
    """C_{t+1} = C_t + eta*lam/(1-eta*lam) * alpha/|gamma_t|, |gamma_t| =
    |gamma_0| (1-eta*lam)^t."""
    law, gamma = [c0], abs(gamma0)
    for _ in range(steps - 1):
        law.append(law[-1] + eta * lam / (1 - eta * lam) * alpha / gamma)
        gamma *= 1 - eta * lam
    return np.array(law)


def test_dead_gn_channel_recovers_under_weight_decay_as_predicted():
    """PsGN revives a dead GN channel at the step the law predicts; plain GN
    keeps it dead forever (gamma and beta decay alike)."""
    eta, lam, alpha, margin = 0.5, 0.1, 0.125, 0.15  # alpha exact in fp32
    gamma0 = np.array([1.0, 0.5, 2.0, 1.5])
    x = torch.randn(
        6,
        C,
        3,
        3,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0))
    # The channel fires iff C_t > -x_hat_max (its largest GN-normalised
    # value over the batch; GN statistics are per sample and group).
    x_hat_max = F.group_norm(x, 2).transpose(0, 1).flatten(1).amax(1).numpy()
    c0 = -x_hat_max - margin
    steps = 60
    law = np.stack(
        [_law(c0[c], gamma0[c], alpha, eta, lam, steps) for c in range(C)], 1)
    predicted = np.array(
        [np.argmax(law[:, c] > -x_hat_max[c]) for c in range(C)])
    assert (predicted > 5).all() and (predicted < steps - 10).all()
    for c, t in enumerate(predicted):  # no borderline case
        assert law[t, c] + x_hat_max[c] > 1e-4
        assert law[t - 1, c] + x_hat_max[c] < -1e-4
    q = 1 - eta * lam  # the closed form agrees with the recursion
    np.testing.assert_allclose(
        law,
        c0 + alpha / gamma0 * (q**-np.arange(steps)[:, None] - 1),
        rtol=1e-9)

    ps = PostShiftedGroupNorm(C, num_groups=2, alpha=alpha).double()
    gn = nn.GroupNorm(2, C).double()
    with torch.no_grad():
        for layer, shift in ((ps, alpha), (gn, 0.0)):
            layer.weight.copy_(torch.from_numpy(gamma0))
            layer.bias.copy_(torch.from_numpy(c0 * gamma0 - shift))
    ratios, first = _dead_run(ps, x, eta, lam, steps)
    for c, t in enumerate(predicted):
        np.testing.assert_allclose(
            ratios[:t + 1, c], law[:t + 1, c], rtol=1e-9)
    np.testing.assert_array_equal(first, predicted)

    ratios, first = _dead_run(gn, x, eta, lam, steps)
    np.testing.assert_allclose(
        ratios, np.broadcast_to(c0, ratios.shape), rtol=1e-9)
    assert (first == -1).all()


def test_efficient_conv_bn_eval_traces_models_with_psgn_and_psin():
    """Mmengine's model-wide transform runs fx.symbolic_trace: through psIN
    (not a torch.nn class) it would fail on InstanceNorm's shape branches.

    Ps layers are leaves of our tracer; conv-psBN is still fused.
    """
    from mmengine.model.efficient_conv_bn_eval import \
        turn_on_efficient_conv_bn_eval_for_single_model as turn_on
    model = nn.Sequential(
        nn.Conv2d(3, C, 3), _randomize(PostShiftedBatchNorm2d(C, alpha=ALPHA)),
        nn.ReLU(), PostShiftedInstanceNorm2d(C, affine=True),
        PostShiftedGroupNorm(C, num_groups=2)).eval()
    x = tiny_input()
    with torch.no_grad():
        expected = model(x)
        with pytest.raises(Exception, match='control flow'):
            turn_on.__wrapped__(copy.deepcopy(model))
        turn_on(model)
        code = model.forward.__self__.code
        assert 'get_bn' in code  # the conv-psBN pair is fused
        torch.testing.assert_close(model(x), expected)
