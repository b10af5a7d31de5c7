# Copyright (c) mmdet-psbn contributors. All rights reserved.
r"""Filter-collapse statistics of normalisation layers, in one place.

Conventions: a *channel* is one output channel of a norm layer, with scale
:math:`\gamma`, bias :math:`\beta` and post-shift :math:`\alpha` (0 for
plain BN, GN, IN). For a normalised input :math:`\hat x \sim N(0, 1)` the
pre-activation is :math:`y = \gamma \hat x + \beta + \alpha`, so (paper eq. 2)

.. math::

    P(y > 0) = \Phi\left(\frac{\beta + \alpha}{|\gamma|}\right)

The measures, per layer and for the whole model:

- **collapsed**: :math:`|\gamma| <` ``gamma_thr`` (1e-3, the paper's
  threshold): the filter's output is a constant.
- **dead** (the non-trainable region): :math:`P(y > 0) <` ``prob_thr``
  (1e-3): behind a ReLU the channel (almost) never fires, so it gets (almost)
  no gradient. :math:`\gamma = 0` counts as dead when
  :math:`\beta + \alpha \le 0`.
- **zero-init** layers are reported apart: a layer whose every
  :math:`\gamma` is exactly 0 was initialised so by design (mmdet's ResNet
  ``zero_init_residual``, the last BN of each residual block); a trained
  layer never has all of its :math:`\gamma` exactly 0. Such a layer stays
  zero-init for later measurements when its name is passed on
  (``zero_init_layers``; the hook does so), since after a few steps its
  :math:`\gamma` are tiny but no longer 0. Its channels still below
  ``gamma_thr`` are counted as ``zero_init``, not as collapsed or dead, so a
  from-scratch run raises no false alarm; once a channel has grown past the
  threshold it counts like any other.
- **transitions** between two measurements of the same layers: channels that
  entered the dead region, and channels that left it (**recovered**).
- **sparsity**, the share of conv FLOPs that the collapsed channels remove,
  needs the graph: see :mod:`mmdet_psbn.analysis.flops`.

Norm layers are every ``_BatchNorm`` (BN, SyncBN, psBN, psSyncBN,
mmengine's BatchNormXd), ``GroupNorm`` and ``_InstanceNorm`` with an affine
transform. From a bare state dict only BN-like layers can be told apart
(``weight``, ``bias``, ``running_mean``, ``running_var``; ``alpha`` marks
psBN): GN and LayerNorm look alike there and are skipped.
"""
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from mmdet_psbn.models.layers.psbn import (PostShiftedBatchNorm2d,
                                           PostShiftedSyncBatchNorm)

GAMMA_THR = 1e-3
PROB_THR = 1e-3


def layer_kind(module: nn.Module) -> Optional[str]:
    """Short name of a norm layer's kind, or None if it is not one we
    measure (no affine transform, or not a norm layer)."""
    if isinstance(module, PostShiftedSyncBatchNorm):
        kind = 'psSyncBN'
    elif isinstance(module, PostShiftedBatchNorm2d):
        kind = 'psBN'
    elif isinstance(module, nn.SyncBatchNorm):
        kind = 'SyncBN'
    elif isinstance(module, _BatchNorm):
        kind = 'BN'
    elif isinstance(module, nn.GroupNorm):
        kind = 'GN'
    elif isinstance(module, _InstanceNorm):
        kind = 'IN'
    else:
        return None
    if getattr(module, 'weight', None) is None or getattr(
            module, 'bias', None) is None:
        return None
    return kind


def _alpha(module: nn.Module) -> float:
    alpha = getattr(module, 'alpha', None) if isinstance(
        module, (PostShiftedBatchNorm2d, PostShiftedSyncBatchNorm)) else None
    return 0.0 if alpha is None else float(alpha)


def norm_layers(model: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """``(name, module, kind)`` of every measured norm layer, in order."""
    return [(name, m, kind) for name, m in model.named_modules()
            if (kind := layer_kind(m)) is not None]


def stage_of(name: str) -> str:
    """The stage a layer belongs to, for the per-stage breakdown:
    ``backbone.layer2.0.bn1`` -> ``backbone.layer2``, ``backbone.bn1`` ->
    ``backbone.stem``."""
    parts = name.split('.')
    if len(parts) >= 3:
        return '.'.join(parts[:2])
    if len(parts) == 2:
        return parts[0] + '.stem'
    return 'stem'


@dataclass
class CollapseStats:
    """One measurement: per-channel values of every norm layer.

    ``names``, ``kinds``, ``alphas``, ``zero_init`` are per layer;
    ``offsets[i]:offsets[i+1]`` are layer ``i``'s channels in the
    per-channel arrays ``abs_gamma``, ``shifted_beta`` (:math:`\\beta +
    \\alpha`), ``collapsed`` and ``dead``.
    """
    names: List[str]
    kinds: List[str]
    alphas: List[float]
    zero_init: np.ndarray
    offsets: np.ndarray
    abs_gamma: np.ndarray
    shifted_beta: np.ndarray
    collapsed: np.ndarray
    dead: np.ndarray
    gamma_thr: float = GAMMA_THR
    prob_thr: float = PROB_THR
    flops: Optional[np.ndarray] = None  # removable conv FLOPs per channel
    total_flops: Optional[float] = None
    flops_map: Optional[object] = None  # the ChannelFlops they came from
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------ layout
    def channels(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def num_channels(self) -> int:
        return int(self.offsets[-1])

    def _counted(self) -> np.ndarray:
        """Per-channel mask: False for the channels of zero-init layers
        that are still below ``gamma_thr``."""
        sizes = np.diff(self.offsets)
        return ~(np.repeat(self.zero_init, sizes) & self.collapsed)

    @property
    def zero_init_layers(self) -> List[str]:
        return [n for n, z in zip(self.names, self.zero_init) if z]

    def activation_prob(self) -> np.ndarray:
        """:math:`\\Phi((\\beta+\\alpha)/|\\gamma|)` per channel."""
        return _phi_ratio(self.shifted_beta, self.abs_gamma)

    # ------------------------------------------------------------ measures
    def summary(self) -> Dict[str, float]:
        """Whole-model shares (of channels outside zero-init layers)."""
        counted = self._counted()
        n = max(int(counted.sum()), 1)
        out = OrderedDict(
            collapsed=float(self.collapsed[counted].sum()) / n,
            dead=float(self.dead[counted].sum()) / n,
            zero_init=float((~counted).sum()) / max(self.num_channels, 1),
            # Not hidden: zero-init channels whose bias went negative are
            # dead for good under BN (psBN revives them).
            zero_init_dead=float((self.dead & ~counted).sum()) /
            max(int((~counted).sum()), 1),
            channels=float(self.num_channels))
        sparsity = self.sparsity()
        if sparsity is not None:
            out['sparsity'] = sparsity
        return out

    def sparsity(self) -> Optional[float]:
        """Share of conv FLOPs removed by the collapsed channels, or None
        without a FLOPs map (see :func:`attach_flops`)."""
        if self.flops is None or not self.total_flops:
            return None
        mask = self.collapsed & self._counted()
        if self.flops_map is None:  # per-channel FLOPs only: an upper bound
            return min(float(self.flops[mask].sum()) / self.total_flops, 1.)
        masks = {
            name: mask[self.channels(i)]
            for i, name in enumerate(self.names)
        }
        return self.flops_map.removed(masks) / float(self.total_flops)

    def by_stage(self) -> Dict[str, Dict[str, float]]:
        """Collapsed and dead shares per stage (see :func:`stage_of`)."""
        counted = self._counted()
        groups: Dict[str, List[slice]] = OrderedDict()
        for i, name in enumerate(self.names):
            groups.setdefault(stage_of(name), []).append(self.channels(i))
        out = OrderedDict()
        for stage, slices in groups.items():
            idx = np.concatenate([np.arange(s.start, s.stop) for s in slices])
            idx = idx[counted[idx]]
            n = max(len(idx), 1)
            out[stage] = dict(
                collapsed=float(self.collapsed[idx].sum()) / n,
                dead=float(self.dead[idx].sum()) / n)
        return out

    def per_layer(self) -> List[dict]:
        """One row per layer, for tables and the JSON report."""
        rows = []
        counted = self._counted()
        for i, name in enumerate(self.names):
            s = self.channels(i)
            n = s.stop - s.start
            row = OrderedDict(
                name=name,
                kind=self.kinds[i],
                channels=n,
                alpha=round(self.alphas[i], 7),
                zero_init=bool(self.zero_init[i]),
                collapsed=int((self.collapsed & counted)[s].sum()),
                dead=int((self.dead & counted)[s].sum()),
                zero_init_channels=int((~counted)[s].sum()),
                min_abs_gamma=float(self.abs_gamma[s].min()) if n else 0.0)
            if self.flops is not None:
                row['removable_flops'] = float(self.flops[s].sum())
            rows.append(row)
        return rows

    def transitions(self, previous: 'CollapseStats') -> Dict[str, int]:
        """Channels that entered / left the dead region since ``previous``.

        Layers are matched by name (a layer absent from either side is
        skipped); zero-init channels on either side are skipped too.
        """
        prev = {n: i for i, n in enumerate(previous.names)}
        counted_now, counted_before = self._counted(), previous._counted()
        entered = recovered = 0
        for i, name in enumerate(self.names):
            j = prev.get(name)
            if j is None:
                continue
            si, sj = self.channels(i), previous.channels(j)
            if si.stop - si.start != sj.stop - sj.start:
                continue
            both = counted_now[si] & counted_before[sj]
            now, before = self.dead[si] & both, previous.dead[sj] & both
            entered += int((now & ~before).sum())
            recovered += int((~now & before).sum())
        return dict(entered_dead=entered, recovered=recovered)

    # ------------------------------------------------------------ (de)serialise
    def state(self) -> dict:
        """What a resumed monitor needs for transitions: plain types and
        tensors only, so ``torch.load(weights_only=True)`` reads it."""
        return dict(
            names=list(self.names),
            kinds=list(self.kinds),
            alphas=[float(a) for a in self.alphas],
            zero_init=torch.from_numpy(self.zero_init.copy()),
            offsets=torch.from_numpy(self.offsets.copy()),
            abs_gamma=torch.from_numpy(self.abs_gamma.copy()),
            shifted_beta=torch.from_numpy(self.shifted_beta.copy()),
            gamma_thr=float(self.gamma_thr),
            prob_thr=float(self.prob_thr),
            meta=dict(self.meta))

    @classmethod
    def from_state(cls, state: Mapping) -> 'CollapseStats':
        return _build(state['names'], state['kinds'], state['alphas'],
                      state['offsets'].numpy(), state['abs_gamma'].numpy(),
                      state['shifted_beta'].numpy(),
                      state['zero_init'].numpy(), state['gamma_thr'],
                      state['prob_thr'], dict(state.get('meta', {})))


def _phi_ratio(shifted_beta: np.ndarray, abs_gamma: np.ndarray) -> np.ndarray:
    """Φ(b/g) with Φ(±inf) for g == 0, elementwise, via erfc for accuracy
    in the far tail."""
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.where(abs_gamma > 0, shifted_beta / abs_gamma,
                         np.where(shifted_beta > 0, np.inf, -np.inf))
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    return 0.5 * erfc(-ratio / math.sqrt(2.0))


def _build(names, kinds, alphas, offsets, abs_gamma, shifted_beta, zero_init,
           gamma_thr, prob_thr, meta=None) -> CollapseStats:
    abs_gamma = np.asarray(abs_gamma, dtype=np.float64)
    shifted_beta = np.asarray(shifted_beta, dtype=np.float64)
    return CollapseStats(
        names=list(names),
        kinds=list(kinds),
        alphas=[float(a) for a in alphas],
        zero_init=np.asarray(zero_init, dtype=bool),
        offsets=np.asarray(offsets, dtype=np.int64),
        abs_gamma=abs_gamma,
        shifted_beta=shifted_beta,
        collapsed=abs_gamma < gamma_thr,
        dead=_phi_ratio(shifted_beta, abs_gamma) < prob_thr,
        gamma_thr=gamma_thr,
        prob_thr=prob_thr,
        meta=dict(meta or {}))


def _validate_thresholds(gamma_thr: float, prob_thr: float) -> None:
    if not (isinstance(gamma_thr, (int, float)) and gamma_thr > 0
            and math.isfinite(gamma_thr)):
        raise ValueError(f'gamma_thr must be a positive number, got '
                         f'{gamma_thr!r}')
    if not (isinstance(prob_thr, (int, float)) and 0 < prob_thr < 1):
        raise ValueError(f'prob_thr must be in (0, 1), got {prob_thr!r}')


def measure_model(model: nn.Module,
                  gamma_thr: float = GAMMA_THR,
                  prob_thr: float = PROB_THR,
                  zero_init_layers: Iterable[str] = ()) -> CollapseStats:
    """Measure every norm layer of ``model`` (see :func:`norm_layers`).

    ``zero_init_layers``: names of layers found all-zero by an earlier
    measurement of the same run (see the module docstring).

    The per-channel values are gathered on the parameters' device and
    brought to the host in one copy: one host-device synchronisation.
    """
    _validate_thresholds(gamma_thr, prob_thr)
    layers = norm_layers(model)
    if not layers:
        return _build([], [], [], np.zeros(1, np.int64), [], [], [],
                      gamma_thr, prob_thr)
    with torch.no_grad():
        parts = []
        for _, m, _ in layers:
            w = m.weight.detach().float().abs().flatten()
            b = m.bias.detach().float().flatten() + _alpha(m)
            parts.append(torch.stack([w, b]))
        packed = torch.cat(parts, dim=1).cpu().numpy()  # the one sync
    sizes = [p.shape[1] for p in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    known = set(zero_init_layers)
    zero_init = np.array([
        name in known or not packed[0, offsets[i]:offsets[i + 1]].any()
        for i, (name, _, _) in enumerate(layers)
    ])
    return _build([n for n, _, _ in layers], [k for _, _, k in layers],
                  [_alpha(m) for _, m, _ in layers], offsets, packed[0],
                  packed[1], zero_init, gamma_thr, prob_thr)


def bn_layers_in_state_dict(
        state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Prefixes (``'backbone.bn1'``) of the BN-like layers in a state
    dict: 1-d ``weight`` and ``bias`` beside ``running_mean`` and
    ``running_var``."""
    prefixes = []
    for key in state_dict:
        if not key.endswith('.running_mean') and key != 'running_mean':
            continue
        prefix = key[:-len('running_mean')].rstrip('.')
        p = prefix + '.' if prefix else ''
        w, b = state_dict.get(p + 'weight'), state_dict.get(p + 'bias')
        if (w is not None and b is not None and p + 'running_var'
                in state_dict and w.dim() == 1 and b.shape == w.shape):
            prefixes.append(prefix)
    return prefixes


def measure_state_dict(state_dict: Mapping[str, torch.Tensor],
                       gamma_thr: float = GAMMA_THR,
                       prob_thr: float = PROB_THR,
                       zero_init_layers: Iterable[str] = ()) -> CollapseStats:
    """Measure the BN-like layers of a state dict (psBN where an
    ``alpha`` entry is present); ``zero_init_layers`` as for
    :func:`measure_model`."""
    _validate_thresholds(gamma_thr, prob_thr)
    names, kinds, alphas, gammas, betas = [], [], [], [], []
    for prefix in bn_layers_in_state_dict(state_dict):
        p = prefix + '.' if prefix else ''
        alpha = state_dict.get(p + 'alpha')
        a = float(alpha) if alpha is not None else 0.0
        names.append(prefix)
        kinds.append('psBN' if alpha is not None else 'BN')
        alphas.append(a)
        gammas.append(state_dict[p + 'weight'].detach().float().abs().numpy())
        betas.append(state_dict[p + 'bias'].detach().float().numpy() + a)
    sizes = [len(g) for g in gammas]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    known = set(zero_init_layers)
    zero_init = [n in known or not g.any() for n, g in zip(names, gammas)]
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return _build(names, kinds, alphas, offsets, cat(gammas), cat(betas),
                  zero_init, gamma_thr, prob_thr)


def attach_flops(stats: CollapseStats, flops_map) -> CollapseStats:
    """Give ``stats`` the per-channel removable FLOPs of a
    :class:`~mmdet_psbn.analysis.flops.ChannelFlops` (layers it does not
    know get 0). Returns ``stats``."""
    per_channel = np.zeros(stats.num_channels)
    for i, name in enumerate(stats.names):
        f = flops_map.removable.get(name)
        s = stats.channels(i)
        if f is not None and len(f) == s.stop - s.start:
            per_channel[s] = f
    stats.flops = per_channel
    stats.total_flops = flops_map.total
    stats.flops_map = flops_map
    return stats
