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
  :math:`\beta + \alpha \le 0`. This means what it says only for a
  **rectified** channel, one whose output goes into a ReLU (or LeakyReLU)
  before anything else. The last BN of a ResNet block and the downsample BN
  feed a residual addition, where a negative output is alive (71 % of the BN
  channels of mmdet's ResNet-50). Which layers are rectified is read from
  the graph (:func:`~mmdet_psbn.analysis.flops.channel_flops`, attached by
  :func:`attach_flops`); without it (a bare state dict) every layer is
  assumed rectified, an upper bound, and ``summary()['dead_rule']`` says
  which rule was used.
- **inactive** (the activation measure of Mehta et al., "On implicit filter
  level sparsity in CNNs"): a rectified channel whose output is :math:`\le 0`
  at every position of every image of a probe batch, i.e. its rectified
  output is exactly zero there. It is read from a real forward pass
  (:class:`ActivationProbe`), so it sees the statistics the layer really
  normalises with; the dead measure assumes :math:`\hat x \sim N(0, 1)`,
  which frozen running statistics (``norm_eval=True``) need not give.
- **zero-init** layers are reported apart: a layer whose every
  :math:`\gamma` is exactly 0 *at the run's first measurement* was
  initialised so by design (mmdet's ResNet ``zero_init_residual``, the last
  BN of each residual block); a trained layer never has all of its
  :math:`\gamma` exactly 0. The decision is made once: later measurements
  take it from the previous one (``previous``) and never re-test, so a layer
  that collapses to exactly 0 later in training is collapsed, not zero-init.
  Layers can also be named (``zero_init_layers``). A zero-init channel is
  left out of the shares (counted as ``zero_init``) until its
  :math:`|\gamma|` has once reached ``gamma_thr``; from then on it counts
  like any other channel, so falling back below the threshold is collapse.
- **transitions** between two measurements of the same layers: rectified
  channels that entered the dead region, and those that left it
  (**recovered**).
- **sparsity**, the share of conv FLOPs that the collapsed channels remove,
  needs the graph: see :mod:`mmdet_psbn.analysis.flops`.
- **diverged**: a channel whose :math:`\gamma` or :math:`\beta + \alpha`
  is NaN or infinite. That is a diverged run (a too-large learning rate,
  an overflow), not collapse: such a channel is neither collapsed, dead
  nor healthy. It is left out of every other share and counted on its
  own (``summary()['diverged']``, a share of all channels).

Norm layers are every ``_BatchNorm`` (BN, SyncBN, psBN1d/psBN/psBN3d,
psSyncBN, mmengine's BatchNormXd), ``GroupNorm`` (GN, psGN) and
``_InstanceNorm`` (IN, psIN) with an affine transform; a ps layer's kind is
its registered name and its :math:`\alpha` is read from it. From a bare
state dict only BN-like layers can be told apart (``weight``, ``bias``,
``running_mean``, ``running_var``; ``alpha`` marks psBN, of any dimension:
their kind there is ``'psBN'``): GN and LayerNorm look alike there and are
skipped, and so are psGN and psIN (no running statistics).
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

from mmdet_psbn.models.layers.psbn import bn_state_entries, is_post_shifted

__all__ = [
    'GAMMA_THR', 'PROB_THR', 'ActivationProbe', 'CollapseStats',
    'attach_flops', 'attach_rectified', 'bn_layers_in_state_dict',
    'check_thresholds', 'layer_kind', 'measure_model', 'measure_state_dict',
    'norm_layers', 'stage_of'
]

GAMMA_THR = 1e-3
PROB_THR = 1e-3


def layer_kind(module: nn.Module) -> Optional[str]:
    """Short name of a norm layer's kind, or None if it is not one we measure
    (no affine transform, or not a norm layer)."""
    if is_post_shifted(module):
        kind = module.ps_kind  # 'psBN', 'psBN1d', 'psSyncBN', 'psGN'...
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
    """:math:`\\alpha` of any ps layer (psBN, psGN, psIN...), else 0."""
    return float(module.alpha) if is_post_shifted(module) else 0.0


def norm_layers(model: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """``(name, module, kind)`` of every measured norm layer, in order."""
    return [(name, m, kind) for name, m in model.named_modules()
            if (kind := layer_kind(m)) is not None]


def stage_of(name: str) -> str:
    """The stage a layer belongs to, for the per-stage breakdown:

    ``backbone.layer2.0.bn1`` -> ``backbone.layer2``, ``backbone.bn1`` ->
    ``backbone.stem``.
    """
    parts = name.split('.')
    if len(parts) >= 3:
        return '.'.join(parts[:2])
    if len(parts) == 2:
        return parts[0] + '.stem'
    return 'stem'


@dataclass
class CollapseStats:
    """One measurement: per-channel values of every norm layer.

    ``names``, ``kinds``, ``alphas``, ``zero_init`` and ``rectified``
    (None: not known, every layer taken as rectified) are per layer;
    ``offsets[i]:offsets[i+1]`` are layer ``i``'s channels in the
    per-channel arrays ``abs_gamma``, ``shifted_beta`` (:math:`\\beta +
    \\alpha`), ``collapsed``, ``dead``, ``grown`` (the channel's
    :math:`|\\gamma|` has reached ``gamma_thr`` at this or an earlier
    measurement) and ``inactive`` (None without a probe; layers not probed
    are marked in ``probed``).
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
    grown: Optional[np.ndarray] = None
    rectified: Optional[np.ndarray] = None
    inactive: Optional[np.ndarray] = None
    probed: Optional[np.ndarray] = None
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

    def _per_channel(self, per_layer: np.ndarray) -> np.ndarray:
        return np.repeat(
            np.asarray(per_layer, dtype=bool), np.diff(self.offsets))

    def _zero_init_pending(self) -> np.ndarray:
        """Per-channel mask of the channels of zero-init layers that have not
        yet reached ``gamma_thr``."""
        return self._per_channel(self.zero_init) & ~self._grown()

    def _finite(self) -> np.ndarray:
        """Per-channel mask: False where γ or β + α is NaN or infinite (the
        diverged channels)."""
        return np.isfinite(self.abs_gamma) & np.isfinite(self.shifted_beta)

    def _counted(self) -> np.ndarray:
        """Per-channel mask of the channels the shares count: neither a
        pending zero-init channel nor a diverged one."""
        return ~self._zero_init_pending() & self._finite()

    def _rectified(self) -> np.ndarray:
        """Per-channel mask of the channels the dead measure covers."""
        if self.rectified is None:
            return np.ones(self.num_channels, dtype=bool)
        return self._per_channel(self.rectified)

    def _probed(self) -> np.ndarray:
        if self.inactive is None:
            return np.zeros(self.num_channels, dtype=bool)
        return self._per_channel(self.probed) & self._rectified()

    @property
    def dead_rule(self) -> str:
        """Which channels the dead measure covers: ``'rectified'`` (read
        from the graph) or ``'all'`` (no graph: every layer assumed
        rectified, an upper bound)."""
        return 'all' if self.rectified is None else 'rectified'

    @property
    def zero_init_layers(self) -> List[str]:
        return [n for n, z in zip(self.names, self.zero_init) if z]

    def activation_prob(self) -> np.ndarray:
        """:math:`\\Phi((\\beta+\\alpha)/|\\gamma|)` per channel."""
        return _phi_ratio(self.shifted_beta, self.abs_gamma)

    # ------------------------------------------------------------ measures
    def summary(self) -> Dict[str, float]:
        """Whole-model shares: ``collapsed`` of every counted channel (not
        a zero-init one, not a diverged one), ``dead`` and ``inactive`` of
        the counted rectified channels (``rectified_channels`` of them, see
        ``dead_rule``), ``diverged`` of all channels (NaN or inf: not
        collapse, see the module docstring)."""
        counted = self._counted()
        pending = self._zero_init_pending()
        rect = counted & self._rectified()
        n = max(int(counted.sum()), 1)
        out = OrderedDict(
            collapsed=float(self.collapsed[counted].sum()) / n,
            dead=float(self.dead[rect].sum()) / max(int(rect.sum()), 1),
            zero_init=float(pending.sum()) / max(self.num_channels, 1),
            # Not hidden: zero-init channels whose bias went negative are
            # dead for good under BN (psBN revives them).
            zero_init_dead=float(
                (self.dead & pending).sum()) / max(int(pending.sum()), 1),
            diverged=float(
                (~self._finite()).sum()) / max(self.num_channels, 1),
            channels=float(self.num_channels),
            rectified_channels=float(rect.sum()),
            dead_rule=self.dead_rule)
        probed = counted & self._probed()
        if probed.any():
            out['inactive'] = float(self.inactive[probed].sum()) / int(
                probed.sum())
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
        """Collapsed, dead (and inactive, when probed) shares per stage (see
        :func:`stage_of`), with the same coverage as :meth:`summary`."""
        counted = self._counted()
        rect = counted & self._rectified()
        probed = counted & self._probed()
        groups: Dict[str, List[slice]] = OrderedDict()
        for i, name in enumerate(self.names):
            groups.setdefault(stage_of(name), []).append(self.channels(i))
        out = OrderedDict()
        for stage, slices in groups.items():
            idx = np.concatenate([np.arange(s.start, s.stop) for s in slices])
            c, r, p = idx[counted[idx]], idx[rect[idx]], idx[probed[idx]]
            out[stage] = dict(
                collapsed=float(self.collapsed[c].sum()) / max(len(c), 1),
                dead=float(self.dead[r].sum()) / max(len(r), 1))
            if len(p):
                out[stage]['inactive'] = float(self.inactive[p].sum()) / len(p)
        return out

    def per_layer(self) -> List[dict]:
        """One row per layer, for tables and the JSON report."""
        rows = []
        counted = self._counted()
        pending = self._zero_init_pending()
        finite = self._finite()
        rect = self._rectified()
        probed = self._probed()
        for i, name in enumerate(self.names):
            s = self.channels(i)
            n = s.stop - s.start
            gammas = self.abs_gamma[s][finite[s]]
            row = OrderedDict(
                name=name,
                kind=self.kinds[i],
                channels=n,
                alpha=round(self.alphas[i], 7),
                zero_init=bool(self.zero_init[i]),
                rectified=bool(rect[s].all()) if n else False,
                collapsed=int((self.collapsed & counted)[s].sum()),
                dead=int((self.dead & counted & rect)[s].sum()),
                zero_init_channels=int(pending[s].sum()),
                diverged=int((~finite)[s].sum()),
                # NaN when every channel diverged
                min_abs_gamma=float(gammas.min()) if len(gammas) else
                (float('nan') if n else 0.0))
            if n and probed[s].all():
                row['inactive'] = int((self.inactive & counted)[s].sum())
            if self.flops is not None:
                row['removable_flops'] = float(self.flops[s].sum())
            rows.append(row)
        return rows

    def transitions(self, previous: 'CollapseStats') -> Dict[str, int]:
        """Channels that entered / left the dead region since ``previous``.

        Layers are matched by name (a layer absent from either side is
        skipped); zero-init channels on either side are skipped too, and so are
        channels that are not rectified now.
        """
        prev = {n: i for i, n in enumerate(previous.names)}
        counted_now = self._counted() & self._rectified()
        counted_before = previous._counted()
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

    # ----------------------------------------------------------- (de)serialise
    def state(self) -> dict:
        """What a resumed monitor needs for transitions: plain types and
        tensors only, so ``torch.load(weights_only=True)`` reads it."""
        return dict(
            names=list(self.names),
            kinds=list(self.kinds),
            alphas=[float(a) for a in self.alphas],
            zero_init=torch.from_numpy(self.zero_init.copy()),
            grown=torch.from_numpy(self._grown().copy()),
            rectified=None if self.rectified is None else torch.from_numpy(
                np.asarray(self.rectified, dtype=bool).copy()),
            offsets=torch.from_numpy(self.offsets.copy()),
            abs_gamma=torch.from_numpy(self.abs_gamma.copy()),
            shifted_beta=torch.from_numpy(self.shifted_beta.copy()),
            gamma_thr=float(self.gamma_thr),
            prob_thr=float(self.prob_thr),
            meta=dict(self.meta))

    @classmethod
    def from_state(cls, state: Mapping) -> 'CollapseStats':
        """The inverse of :meth:`state` (also of the states of versions before
        ``grown`` and ``rectified`` were kept)."""
        stats = _build(state['names'], state['kinds'], state['alphas'],
                       state['offsets'].numpy(), state['abs_gamma'].numpy(),
                       state['shifted_beta'].numpy(),
                       state['zero_init'].numpy(), state['gamma_thr'],
                       state['prob_thr'], dict(state.get('meta', {})))
        if state.get('grown') is not None:
            stats.grown = state['grown'].numpy().astype(bool)
        if state.get('rectified') is not None:
            stats.rectified = state['rectified'].numpy().astype(bool)
        return stats

    def _grown(self) -> np.ndarray:
        return self.grown if self.grown is not None else ~self.collapsed

    def attach_inactive(self,
                        inactive: Mapping[str, np.ndarray]) -> 'CollapseStats':
        """Attach an activation probe's result (:attr:`ActivationProbe.

        inactive`: a boolean mask per layer name; layers it lacks, or whose
        channel count differs, are not probed). Returns ``self``.
        """
        self.inactive = np.zeros(self.num_channels, dtype=bool)
        self.probed = np.zeros(len(self.names), dtype=bool)
        for i, name in enumerate(self.names):
            mask = inactive.get(name)
            s = self.channels(i)
            if mask is not None and len(mask) == s.stop - s.start:
                self.inactive[s] = np.asarray(mask, dtype=bool)
                self.probed[i] = True
        return self


def _phi_ratio(shifted_beta: np.ndarray, abs_gamma: np.ndarray) -> np.ndarray:
    """Φ(b/g) with Φ(±inf) for g == 0, elementwise, via erfc for accuracy in
    the far tail."""
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = np.where(abs_gamma > 0, shifted_beta / abs_gamma,
                         np.where(shifted_beta > 0, np.inf, -np.inf))
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    return 0.5 * erfc(-ratio / math.sqrt(2.0))


def _build(names,
           kinds,
           alphas,
           offsets,
           abs_gamma,
           shifted_beta,
           zero_init,
           gamma_thr,
           prob_thr,
           meta=None,
           zero_init_layers=(),
           previous: Optional[CollapseStats] = None) -> CollapseStats:
    """The stats of one measurement.

    ``zero_init`` None: decide it (and
    ``grown``, ``rectified``) from ``previous`` and ``zero_init_layers``.
    """
    abs_gamma = np.asarray(abs_gamma, dtype=np.float64)
    shifted_beta = np.asarray(shifted_beta, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    grown = abs_gamma >= gamma_thr
    rectified = None
    if zero_init is None:
        known = set(zero_init_layers)
        before = {}
        if previous is not None:
            before = {n: i for i, n in enumerate(previous.names)}
            prev_grown = previous._grown()
        zero_init = np.zeros(len(names), dtype=bool)
        for i, name in enumerate(names):
            s = slice(int(offsets[i]), int(offsets[i + 1]))
            j = before.get(name)
            if j is not None and (offsets[i + 1] - offsets[i]
                                  == previous.offsets[j + 1] -
                                  previous.offsets[j]):
                # Decided at the first measurement, never re-tested.
                zero_init[i] = previous.zero_init[j] or name in known
                grown[s] |= prev_grown[int(previous.offsets[j]
                                           ):int(previous.offsets[j + 1])]
            else:  # this layer's first measurement
                zero_init[i] = name in known or not abs_gamma[s].any()
        if previous is not None and previous.rectified is not None:
            rect = dict(zip(previous.names, previous.rectified))
            if all(n in rect for n in names):
                rectified = np.array([rect[n] for n in names], dtype=bool)
    return CollapseStats(
        names=list(names),
        kinds=list(kinds),
        alphas=[float(a) for a in alphas],
        zero_init=np.asarray(zero_init, dtype=bool),
        offsets=offsets,
        abs_gamma=abs_gamma,
        shifted_beta=shifted_beta,
        collapsed=abs_gamma < gamma_thr,
        dead=_phi_ratio(shifted_beta, abs_gamma) < prob_thr,
        grown=grown,
        rectified=rectified,
        gamma_thr=gamma_thr,
        prob_thr=prob_thr,
        meta=dict(meta or {}))


def check_thresholds(gamma_thr: float, prob_thr: float) -> None:
    """Raise ``ValueError`` unless ``gamma_thr > 0`` (finite) and ``0 <
    prob_thr < 1`` (numbers, not bools)."""

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if not (number(gamma_thr) and gamma_thr > 0 and math.isfinite(gamma_thr)):
        raise ValueError(f'gamma_thr must be a positive number, got '
                         f'{gamma_thr!r}')
    if not (number(prob_thr) and 0 < prob_thr < 1):
        raise ValueError(f'prob_thr must be in (0, 1), got {prob_thr!r}')


def measure_model(model: nn.Module,
                  gamma_thr: float = GAMMA_THR,
                  prob_thr: float = PROB_THR,
                  zero_init_layers: Iterable[str] = (),
                  previous: Optional[CollapseStats] = None) -> CollapseStats:
    """Measure every norm layer of ``model`` (see :func:`norm_layers`).

    Args:
        model (nn.Module): The model (unwrapped from DDP).
        gamma_thr (float): Collapse threshold on :math:`|\\gamma|`.
        prob_thr (float): Dead threshold on :math:`P(y > 0)`.
        zero_init_layers (iterable of str): Layers to treat as zero-init
            whatever their values.
        previous (CollapseStats, optional): The previous measurement of the
            same run: zero-init layers, the channels that have grown past
            ``gamma_thr`` and the rectified layers are taken from it (see
            the module docstring). Without it, this is a run's first
            measurement and zero-init layers are those all exactly 0.

    The per-channel values are gathered on the parameters' device and
    brought to the host in one copy: one host-device synchronisation.
    """
    check_thresholds(gamma_thr, prob_thr)
    layers = norm_layers(model)
    if not layers:
        return _build([], [], [], np.zeros(1, np.int64), [], [], [], gamma_thr,
                      prob_thr)
    with torch.no_grad():
        parts = []
        for _, m, _ in layers:
            w = m.weight.detach().float().abs().flatten()
            b = m.bias.detach().float().flatten() + _alpha(m)
            parts.append(torch.stack([w, b]))
        packed = torch.cat(parts, dim=1).cpu().numpy()  # the one sync
    sizes = [p.shape[1] for p in parts]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return _build([n for n, _, _ in layers], [k for _, _, k in layers],
                  [_alpha(m) for _, m, _ in layers],
                  offsets,
                  packed[0],
                  packed[1],
                  None,
                  gamma_thr,
                  prob_thr,
                  zero_init_layers=zero_init_layers,
                  previous=previous)


def bn_layers_in_state_dict(
        state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Prefixes (``'backbone.bn1'``) of the BN-like layers in a state
    dict that can be measured: of those
    :func:`~mmdet_psbn.models.layers.bn_state_entries` finds, the ones with
    1-d ``weight`` and ``bias`` beside ``running_mean`` and
    ``running_var``."""
    return [
        prefix[:-1] for prefix, e in bn_state_entries(state_dict).items()
        if {'weight', 'bias', 'running_mean', 'running_var'} <= e.keys()
        and e['weight'].dim() == 1 and e['bias'].shape == e['weight'].shape
    ]


def measure_state_dict(
        state_dict: Mapping[str, torch.Tensor],
        gamma_thr: float = GAMMA_THR,
        prob_thr: float = PROB_THR,
        zero_init_layers: Iterable[str] = (),
        previous: Optional[CollapseStats] = None) -> CollapseStats:
    """Measure the BN-like layers of a state dict (psBN where an ``alpha``
    entry is present); ``zero_init_layers`` and ``previous`` as for
    :func:`measure_model`.

    A state dict does not tell which layers are
    rectified: attach a graph (:func:`attach_flops`) for that.
    """
    check_thresholds(gamma_thr, prob_thr)
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
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return _build(
        names,
        kinds,
        alphas,
        offsets,
        cat(gammas),
        cat(betas),
        None,
        gamma_thr,
        prob_thr,
        zero_init_layers=zero_init_layers,
        previous=previous)


def attach_flops(stats: CollapseStats, flops_map) -> CollapseStats:
    """Give ``stats`` the per-channel removable FLOPs of a
    :class:`~mmdet_psbn.analysis.flops.ChannelFlops` (layers it does not know
    get 0) and its rectified layers (:func:`attach_rectified`).

    Returns ``stats``.
    """
    per_channel = np.zeros(stats.num_channels)
    for i, name in enumerate(stats.names):
        f = flops_map.removable.get(name)
        s = stats.channels(i)
        if f is not None and len(f) == s.stop - s.start:
            per_channel[s] = f
    stats.flops = per_channel
    stats.total_flops = flops_map.total
    stats.flops_map = flops_map
    return attach_rectified(stats, flops_map)


def attach_rectified(stats: CollapseStats, flops_map) -> CollapseStats:
    """Give ``stats`` the rectified layers read from the graph
    (:attr:`ChannelFlops.rectified`; layers it does not know count as not
    rectified), so that ``dead`` covers only those.

    Returns ``stats``.
    """
    rectified = getattr(flops_map, 'rectified', None)
    if rectified:
        stats.rectified = np.array(
            [bool(rectified.get(n, False)) for n in stats.names], dtype=bool)
    return stats


class ActivationProbe:
    """Record which channels of some norm layers never output a positive value
    during the forward passes run inside the block (the activation measure, see
    the module docstring).

    Forward hooks exist only inside the block (or between :meth:`attach` and
    :meth:`detach`, recording while :attr:`enabled`); each does one reduction
    (``output > 0`` anywhere over the batch and spatial positions) under
    ``no_grad`` on the output the layer returns, before any in-place
    rectifier runs, and changes nothing: the same training with and
    without a probe gives bit-identical results. Several calls of a layer
    (several passes, a shared layer) are pooled.

    Args:
        model (nn.Module): The model (unwrapped from DDP).
        names (iterable of str): The norm layers to probe, usually the
            rectified ones (:attr:`ChannelFlops.rectified_layers`).

    Example:
        >>> with ActivationProbe(model, names) as probe:
        ...     model(images)
        >>> stats.attach_inactive(probe.inactive)

    Note:
        ``torch.compile`` does not see hooks added to a module after it
        compiled it (``torch._dynamo.config.skip_nnmodule_hook_guards``).
        For a model that is, or will be, compiled, :meth:`attach` the probe
        before its first compiled call and switch :attr:`enabled` (with
        :meth:`reset`) instead: dynamo then compiles one graph with the
        reductions and one without.
    """

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        wanted = set(names)
        self._modules = [(n, m) for n, m in model.named_modules()
                         if n in wanted]
        self._fired: Dict[str, torch.Tensor] = {}
        self._handles: list = []
        #: Whether the attached hooks record (they return at once if not).
        self.enabled = True

    def attach(self) -> None:
        """Put the forward hooks on the layers (if they are not on yet)."""
        if not self._handles:
            self._handles = [
                module.register_forward_hook(self._make_hook(name))
                for name, module in self._modules
            ]

    def detach(self) -> None:
        """Remove the forward hooks; what was recorded stays readable."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset(self) -> None:
        """Forget what was recorded."""
        self._fired = {}

    def __enter__(self) -> 'ActivationProbe':
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def _make_hook(self, name: str):

        def hook(module, args, output):
            if (not self.enabled or not isinstance(output, torch.Tensor)
                    or output.dim() < 2):
                return
            with torch.no_grad():
                dims = [0] + list(range(2, output.dim()))
                fired = output.detach().gt(0).any(
                    dim=dims) if len(dims) > 1 else output.detach().gt(0).any(
                        dim=0)
                before = self._fired.get(name)
                self._fired[name] = fired if before is None else (before
                                                                  | fired)

        return hook

    @property
    def inactive(self) -> Dict[str, np.ndarray]:
        """Per probed layer that ran, the mask of channels that never output a
        positive value (one host-device copy)."""
        if not self._fired:
            return {}
        names = list(self._fired)
        packed = torch.cat([self._fired[n] for n in names]).cpu().numpy()
        out, start = OrderedDict(), 0
        for n in names:
            size = self._fired[n].numel()
            out[n] = ~packed[start:start + size]
            start += size
        return out
