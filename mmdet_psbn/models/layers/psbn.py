# Copyright (c) mmdet-psbn contributors. All rights reserved.
r"""Post-shifted BatchNorm (psBN): the maths, the layers, the converters.

Conventions: the channel count is always the first argument and ``alpha`` is
keyword-only; every other argument is ``nn.BatchNorm2d``'s (or
``nn.SyncBatchNorm``'s), with the same defaults.

psBN is BatchNorm whose output is shifted by a constant :math:`\alpha > 0`:

.. math::

    y = \gamma \, \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}
        + \beta + \alpha

Statistics, running averages, :math:`\gamma` and :math:`\beta` are exactly
BN's; only the output moves. Weight decay pulls :math:`\gamma` and
:math:`\beta` towards 0, hence the effective bias :math:`\beta + \alpha`
towards :math:`\alpha > 0`. A channel that BN + ReLU has killed
(:math:`\beta / |\gamma| \ll 0`: negative for every input, so it gets no
gradient) feels only weight decay. Under BN, one SGD step (learning rate
:math:`\eta`, weight decay :math:`\lambda`) scales :math:`\gamma` and
:math:`\beta` by the same :math:`1 - \eta\lambda`, the ratio never moves and
the channel stays dead. Under psBN the ratio
:math:`C_t = (\beta_t + \alpha) / |\gamma_t|` grows:

.. math::

    C_{t+1} = C_t + \frac{\eta\lambda}{1 - \eta\lambda}
              \frac{\alpha}{|\gamma_t|}

until the channel is alive again.

The shift is folded into the affine bias: BN's own forward runs once with
:math:`\beta + \alpha` in place of :math:`\beta` (one ``batch_norm`` call, no
extra pass over the activation; the gradient of :math:`\beta` is BN's).

The same shift, by the same mixin, on the other norms mmcv registers (the
names are mmcv's with ``ps`` in front; ``docs/variants.md``): psBN1d,
psBN (= psBN2d), psBN3d, psSyncBN, psGN (``nn.GroupNorm``: per-sample group
statistics, no running ones) and psIN1d/psIN (= psIN2d)/psIN3d (which need
``affine=True``). Everything below says "BN" for the plain layer; it holds
for each variant with its own plain layer. :func:`is_post_shifted` is true
for all of them, :func:`is_psbn` for the BatchNorm ones only (what the SyncBN
converters and conv-BN fusions handle).

Note:
    The checkpoint contract.

    - Names are BN's (``weight``, ``bias``, ``running_mean``, ``running_var``,
      ``num_batches_tracked``) plus a persistent 0-dim buffer ``alpha``, so
      ``bn1.weight`` stays ``bn1.weight`` and a psBN checkpoint says which
      :math:`\alpha` it was trained with. ``bias`` stores :math:`\beta`, not
      :math:`\beta + \alpha`.
    - Loading decides from the presence of ``<prefix>alpha`` in the state
      dict, never from the per-module ``_metadata`` version: many converters
      strip it, and a plain ``nn.BatchNorm2d`` checkpoint also says version 2
      (detectron2 once rewrote BN values on load from that version and had to
      undo it). The layer always keeps the :math:`\alpha` it was built with:

      * no ``alpha`` (ImageNet weights, an mmdet BN model):
        :math:`\beta \leftarrow \beta_{ckpt} - \alpha`, so the eval output is
        the BN model's (function-preserving by default);
      * the layer's own :math:`\alpha`: loaded unchanged (exact round trip);
      * another :math:`\alpha`:
        :math:`\beta \leftarrow \beta_{ckpt} + \alpha_{ckpt} - \alpha`
        (function-preserving; logged once per pair of values).

      A layer without bias (``affine=False`` or ``bias=False``) has nowhere
      to absorb the difference: it loads and warns that its outputs move.
    - Deploying: :func:`fold_psbn_state_dict` (``tools/psbn2bn.py``) writes
      :math:`\beta + \alpha` into ``bias`` and drops ``alpha``; vanilla BN
      then loads it with nothing missing or unexpected. The other way
      round, a model whose layers are plain BN loads a psBN checkpoint
      folded the same way once :func:`fold_psbn_entries_on_load` has run on
      it (``tools/train.py`` and ``tools/test.py`` do; mmengine alone would
      warn "unexpected key" and drop :math:`\alpha`).
    - Tracing: ``torch.fx`` traces psBN through its forward (only
      ``torch.nn`` modules are leaves): BN's ``batch_norm`` call with
      ``bias + alpha``, the graph BN gives plus one ``add`` of ``C``
      elements. As with any module fx traces through, the graph keeps the
      training flag of the trace and does not count
      ``num_batches_tracked`` (fx runs that in-place update once, while
      tracing); ``momentum=None`` in training mode is refused.
      ``torch.jit.trace``, ``torch.export`` and ``torch.onnx.export``
      record the same. ``torch.jit.script`` is refused with the fix (the
      one-call parameter swap has no TorchScript form without a copy of
      BN's forward).
    - Use :meth:`PostShiftedSyncBatchNorm.convert_sync_psbn` /
      :meth:`~PostShiftedSyncBatchNorm.revert_sync_psbn` for SyncBN. The
      upstream converters (torch's, mmengine's) rebuild plain BN layers and
      drop :math:`\alpha`; ``import mmdet_psbn`` makes them route ps layers
      here (:mod:`mmdet_psbn.models.layers.upstream`).
"""
import contextlib
import logging
import math
import numbers
import warnings
from collections import OrderedDict
from typing import Dict, Iterator, List, Mapping, Optional, Set, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.utils import _BatchNormXd
from mmengine.registry import MODELS
from torch import Tensor
from torch.fx import Proxy
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.utils.hooks import RemovableHandle

__all__ = [
    'BN_STATE_KEYS', 'DEFAULT_ALPHA', 'PostShiftedBatchNorm1d',
    'PostShiftedBatchNorm2d', 'PostShiftedBatchNorm3d', 'PostShiftedGroupNorm',
    'PostShiftedInstanceNorm1d', 'PostShiftedInstanceNorm2d',
    'PostShiftedInstanceNorm3d', 'PostShiftedSyncBatchNorm',
    'bn_state_entries', 'check_alpha', 'convert_to_psbn', 'find_psbn_prefixes',
    'fold_psbn_state_dict', 'fold_psbn_entries_on_load', 'is_post_shifted',
    'is_psbn'
]

DEFAULT_ALPHA = 0.1

# (alpha in checkpoint, alpha of the layer) pairs already reported.
_reported_alpha_pairs: Set[Tuple[float, float]] = set()


def check_alpha(alpha) -> float:
    """Return ``alpha`` as a float if it is a finite positive real number.

    Raises:
        ValueError: for anything else (bools, strings, tensors, 0, negative,
            NaN, inf), with the value in the message.
    """
    if (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real)
            or not math.isfinite(alpha) or alpha <= 0):
        raise ValueError('psBN alpha must be a finite positive real number, '
                         f'got {alpha!r} ({type(alpha).__name__})')
    return float(alpha)


class _PostShiftMixin:
    """Adds the post-shift :math:`\\alpha` to a torch norm layer.

    Put it before the plain class in the bases: a ``_BatchNorm``,
    ``nn.GroupNorm`` or ``_InstanceNorm`` subclass, whose forward reads
    ``self.bias`` for its affine bias. See the module docstring for the
    maths and the checkpoint contract.

    Attributes:
        ps_kind (str): The registered name (``'psBN'``, ``'psGN'``...), the
            ``kind`` of :mod:`mmdet_psbn.analysis.collapse`.
        plain_type (str): mmcv's name of the plain counterpart (``'BN'``,
            ``'GN'``...), for messages.
    """

    ps_kind = 'psBN'
    plain_type = 'BN'

    # ``_version`` stays BN's (2) on purpose: what tells a psBN entry of a
    # state dict from a BN one is the ``alpha`` key, not this number (see the
    # module Note).

    def __init__(self, *args, alpha=DEFAULT_ALPHA, **kwargs) -> None:
        alpha = check_alpha(alpha)
        super().__init__(*args, **kwargs)
        ref = self._own_tensor()
        if ref is not None:
            factory = dict(device=ref.device, dtype=ref.dtype)
        else:
            factory = dict(
                device=kwargs.get('device'), dtype=kwargs.get('dtype'))
        self.register_buffer('alpha', torch.tensor(alpha, **factory))

    def _shifted_bias(self, dtype: Optional[torch.dtype] = None) -> Tensor:
        """:math:`\\beta + \\alpha`, as BN's ``bias`` argument expects it.

        With a bias the result has the bias' dtype and carries its gradient.
        Without one it is :math:`\\alpha` per channel in the dtype of the
        weight or running statistics (BN's mixed-precision rule), else in
        ``dtype`` (the input's) if given.

        Every decision here reads the layer's own parameters and buffers
        (``_parameters``/``_buffers``: real tensors even under
        ``torch.fx``), never the input, so symbolic tracing records the
        shift and nothing else (see :meth:`forward`).
        """
        if self._parameters['bias'] is not None:
            return self.bias + self.alpha
        own = self._own_dtype()
        if own is not None:
            dtype = own
        alpha = self.alpha if dtype is None else self.alpha.to(dtype)
        return alpha.expand(self._num_channels()).contiguous()

    def _num_channels(self) -> int:
        # GN's count is num_channels, BN's and IN's num_features.
        if isinstance(self, nn.GroupNorm):
            return self.num_channels
        return self.num_features

    def _own_tensor(self) -> Optional[Tensor]:
        """The weight, else the running mean, else None (``affine=False`` and
        no running statistics)."""
        for ref in (self._parameters['weight'],
                    self._buffers.get('running_mean')):
            if ref is not None:
                return ref
        return None

    def _own_dtype(self) -> Optional[torch.dtype]:
        """The dtype of :meth:`_own_tensor`, or None."""
        ref = self._own_tensor()
        return None if ref is None else ref.dtype

    @contextlib.contextmanager
    def post_shift_folded(self,
                          dtype: Optional[torch.dtype] = None
                          ) -> Iterator[nn.Module]:
        """Within the block, ``self.bias`` is :math:`\\beta + \\alpha`.

        For code that reads ``bn.bias`` to compute BN itself (conv-BN fusion,
        efficient conv-BN eval, ``torch.nn.utils.fuse_conv_bn_weights``): it
        then computes psBN. The tensor carries :math:`\\beta`'s gradient;
        the parameter itself is restored on exit. ``dtype`` matters only for
        a layer with neither weight nor running statistics (see
        :meth:`_shifted_bias`).
        """
        bias = self._parameters['bias']
        self._parameters['bias'] = self._shifted_bias(dtype)
        try:
            yield self
        finally:
            self._parameters['bias'] = bias

    def forward(self, input: Tensor) -> Tensor:
        # The mechanism torch.func.functional_call uses: BN's own forward
        # reads self.bias, which for this one call is beta + alpha. The
        # input's dtype is read only when the layer has nothing of its own
        # to take alpha's dtype from: under torch.fx the input is a Proxy
        # and every read of it would be a node of the graph.
        dtype = None
        if self._parameters['bias'] is None and self._own_dtype() is None:
            dtype = input.dtype
        bias = self._parameters['bias']
        self._parameters['bias'] = self._shifted_bias(dtype)
        try:
            return super().forward(input)
        finally:
            self._parameters['bias'] = bias

    def _check_input_dim(self, input: Tensor) -> None:
        # torch.fx keeps BN as a leaf module and traces psBN (not in
        # torch.nn) through this forward: a Proxy has no dim() to branch
        # on. The check runs in every eager call; the graph holds BN's
        # batch_norm call with beta + alpha.
        if not isinstance(input, Proxy):
            super()._check_input_dim(input)
        elif (self.training and self.track_running_stats
              and self.momentum is None):
            raise RuntimeError(
                f'{type(self).__name__}(momentum=None) cannot be traced by '
                f'torch.fx in training mode: BN computes its cumulative '
                f'average factor from num_batches_tracked in Python, and '
                f'the graph would freeze it. Trace in eval mode, or give a '
                f'momentum.')

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this before compiling (and puts what it
        # returns in place of the layer in the caller's own model, so we
        # cannot hand it a stand-in).
        raise RuntimeError(
            f'{type(self).__name__} cannot be compiled by torch.jit.script: '
            f'its forward runs the plain layer\'s own forward with beta + '
            f'alpha swapped in for one call, which TorchScript cannot '
            f'express. Use torch.jit.trace, torch.export or '
            f'torch.onnx.export (they keep alpha), or deploy as plain '
            f'{self.plain_type}: fold alpha into the bias with `python '
            f'tools/psbn2bn.py CKPT OUT` (fold_psbn_state_dict) and build '
            f'the model with norm_cfg=dict(type=\'{self.plain_type}\').')

    def extra_repr(self) -> str:
        alpha = 'meta' if self.alpha.is_meta else f'{self.alpha.item():g}'
        return f'{super().extra_repr()}, alpha={alpha}'

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys,
                              error_msgs) -> None:
        alpha_key, bias_key = prefix + 'alpha', prefix + 'bias'
        own_alpha = self.alpha.detach().clone()
        has_bias = self._parameters['bias'] is not None
        ckpt_alpha = state_dict.get(alpha_key)
        if isinstance(ckpt_alpha, Tensor) and ckpt_alpha.numel() == 1:
            if ckpt_alpha.item() != own_alpha.item():
                self._report_alpha_change(prefix, ckpt_alpha.item(),
                                          own_alpha.item(), has_bias)
                bias = state_dict.get(bias_key)
                if has_bias and isinstance(bias, Tensor):
                    shift = ckpt_alpha.double() - own_alpha.double()
                    state_dict[bias_key] = bias + shift.reshape(
                        ()).to(bias.device)
            state_dict[alpha_key] = own_alpha
        elif alpha_key in state_dict:
            pass  # not a psBN alpha: super() reports the mismatch
        elif any(prefix + name in state_dict
                 for name in ('weight', 'bias', 'running_mean',
                              'running_var')):
            # A plain entry (BN, GN, IN): make beta + alpha equal its bias.
            bias = state_dict.get(bias_key)
            if has_bias and isinstance(bias, Tensor):
                state_dict[bias_key] = bias - own_alpha.to(bias.device)
            elif not has_bias:
                warnings.warn(
                    f'{prefix or self.ps_kind + " layer"}: loading a plain '
                    f'{self.plain_type} entry into a {self.ps_kind} layer '
                    f'without bias; its outputs are the {self.plain_type} '
                    f'outputs + alpha={own_alpha.item():g}',
                    stacklevel=2)
            state_dict[alpha_key] = own_alpha
        # else: nothing of this layer in the checkpoint; super() reports it.
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @staticmethod
    def _report_alpha_change(prefix: str, ckpt_alpha: float, own_alpha: float,
                             has_bias: bool) -> None:
        if not has_bias:
            warnings.warn(
                f'{prefix or "psBN layer"}: checkpoint alpha={ckpt_alpha:g} '
                f'loaded into a psBN layer without bias and alpha='
                f'{own_alpha:g}; its outputs move by the difference',
                stacklevel=3)
            return
        if (ckpt_alpha, own_alpha) in _reported_alpha_pairs:
            return
        _reported_alpha_pairs.add((ckpt_alpha, own_alpha))
        print_log(
            f'psBN: checkpoint trained with alpha={ckpt_alpha:g} loaded into '
            f'layers with alpha={own_alpha:g}; biases adjusted so outputs '
            f'are unchanged (first: {prefix or "<root>"})',
            logger='current',
            level=logging.INFO)


def is_post_shifted(module: nn.Module) -> bool:
    """Whether ``module`` is any post-shifted layer: psBN (1d, 2d, 3d),
    psSyncBN, psGN or psIN (1d, 2d, 3d).

    For what reads :math:`\\alpha` or the checkpoint contract (analysis,
    the load-time fold); see :func:`is_psbn` for what rebuilds BN layers.
    """
    return isinstance(module, _PostShiftMixin)


def is_psbn(module: nn.Module) -> bool:
    """Whether ``module`` is a post-shifted *BatchNorm* layer (psBN1d, psBN,
    psBN3d, psSyncBN): a ``_BatchNorm``, the layers the SyncBN converters and
    conv-BN fusions handle (psGN and psIN are neither)."""
    return isinstance(module, _PostShiftMixin) and isinstance(
        module, _BatchNorm)


# Why ``_BatchNorm`` is named again in the bases (it already is the base of
# BatchNorm2d and SyncBatchNorm; the MRO is the same with or without it): an
# mmengine init rule such as ``dict(type='Constant', layer='_BatchNorm')``
# (mmdet's ResNet, our CIFARResNet) matches a layer by its class name and the
# names of its *direct* bases only (mmengine 0.10.7,
# ``mmengine.model.weight_init._get_bases_name``). BN's names are
# {'BatchNorm2d', '_BatchNorm'}, SyncBN's {'SyncBatchNorm', '_BatchNorm'};
# listing it here makes psBN's and psSyncBN's include them, so every rule that
# initialises BN initialises psBN the same way (``isinstance``, ``infer_abbr``
# -> 'bn', pickling and the converters see the same class as before).


@MODELS.register_module(['psBN', 'psBN2d'])
class PostShiftedBatchNorm2d(_PostShiftMixin, nn.BatchNorm2d, _BatchNorm):
    """BatchNorm2d with a constant post-shift :math:`\\alpha` (psBN).

    Registered in mmengine's root ``MODELS`` as ``'psBN'`` and ``'psBN2d'``
    (mmcv's ``'BN'``/``'BN2d'``): use
    ``norm_cfg=dict(type='psBN')`` or ``dict(type='psBN', alpha=0.05)``. As a
    ``_BatchNorm`` subclass it is named ``bn1``, ``bn2``... by
    ``build_norm_layer``, frozen by ``norm_eval``/``frozen_stages``, given
    ``norm_decay_mult`` by mmengine's optimizer constructor, and initialised
    by every init rule that names ``'_BatchNorm'`` or ``'BatchNorm2d'``.

    Args:
        num_features (int): Number of channels.
        *args: ``nn.BatchNorm2d``'s ``eps``, ``momentum``, ``affine``,
            ``track_running_stats``, ``device``, ``dtype``.
        alpha (float): The post-shift, finite and > 0. Defaults to 0.1.
        **kwargs: Keyword arguments of ``nn.BatchNorm2d``; any other raises
            its ``TypeError``.

    Note:
        See the module docstring for the checkpoint contract. With
        ``affine=False`` the shift still applies (as a constant bias).
    """


@MODELS.register_module('psBN1d')
class PostShiftedBatchNorm1d(_PostShiftMixin, nn.BatchNorm1d, _BatchNorm):
    """BatchNorm1d with a constant post-shift :math:`\\alpha` (psBN1d).

    Registered as ``'psBN1d'`` (mmcv's ``'BN1d'``), for ``(N, C)`` and
    ``(N, C, L)`` inputs. Arguments are ``nn.BatchNorm1d``'s plus the
    keyword-only ``alpha``; everything else as :class:`PostShiftedBatchNorm2d`.
    """

    ps_kind = 'psBN1d'
    plain_type = 'BN1d'


@MODELS.register_module('psBN3d')
class PostShiftedBatchNorm3d(_PostShiftMixin, nn.BatchNorm3d, _BatchNorm):
    """BatchNorm3d with a constant post-shift :math:`\\alpha` (psBN3d).

    Registered as ``'psBN3d'`` (mmcv's ``'BN3d'``), for ``(N, C, D, H, W)``
    inputs. Arguments are ``nn.BatchNorm3d``'s plus the keyword-only
    ``alpha``; everything else as :class:`PostShiftedBatchNorm2d`.
    """

    ps_kind = 'psBN3d'
    plain_type = 'BN3d'


@MODELS.register_module('psGN')
class PostShiftedGroupNorm(_PostShiftMixin, nn.GroupNorm):
    """GroupNorm with a constant post-shift :math:`\\alpha` (psGN).

    .. math::

        y = \\gamma \\, \\frac{x - \\mathrm{E}_g[x]}
            {\\sqrt{\\mathrm{Var}_g[x] + \\epsilon}} + \\beta + \\alpha

    with the statistics of each group of channels of each sample, as GN.
    GN's own forward runs once with :math:`\\beta + \\alpha` as its bias
    (one ``group_norm`` call); there are no running statistics.

    Registered as ``'psGN'`` (mmcv's ``'GN'``):
    ``norm_cfg=dict(type='psGN', num_groups=32)``. As a ``GroupNorm``
    subclass it is named ``gn`` by ``build_norm_layer`` and initialised by
    every rule that names ``'GroupNorm'``.

    Args:
        num_channels (int): Number of channels. First, as in every ps layer
            and as ``build_norm_layer`` passes it to any class but
            ``nn.GroupNorm`` itself (whose first argument is
            ``num_groups``).
        num_groups (int): Keyword-only, so that torch's order
            ``(num_groups, num_channels)`` is a ``TypeError``, not a silent
            swap.
        alpha (float): The post-shift, finite and > 0. Defaults to 0.1.
        **kwargs: ``nn.GroupNorm``'s ``eps``, ``affine``, ``device``,
            ``dtype``.

    Note:
        The checkpoint contract is psBN's: GN's ``weight`` and ``bias`` plus
        ``alpha``; a plain GN entry loads with
        :math:`\\beta \\leftarrow \\beta_{ckpt} - \\alpha`.
    """

    ps_kind = 'psGN'
    plain_type = 'GN'

    def __init__(self,
                 num_channels: int,
                 *,
                 num_groups: int,
                 alpha=DEFAULT_ALPHA,
                 **kwargs) -> None:
        super().__init__(num_groups, num_channels, alpha=alpha, **kwargs)


class _PostShiftedInstanceNormMixin(_PostShiftMixin):
    """psIN: refuses ``affine=False``, torch's default (see
    :class:`PostShiftedInstanceNorm2d`)."""

    ps_kind = 'psIN'
    plain_type = 'IN'

    def __init__(self, *args, alpha=DEFAULT_ALPHA, **kwargs) -> None:
        super().__init__(*args, alpha=alpha, **kwargs)
        if not self.affine:
            raise ValueError(
                f'{self.ps_kind} needs affine=True (got affine=False, '
                f'torch\'s default for InstanceNorm): without beta and '
                f'gamma no channel can die and nothing can carry alpha. Use '
                f"norm_cfg=dict(type='{self.ps_kind}', affine=True), the "
                f"counterpart of dict(type='{self.plain_type}', "
                f'affine=True)')


@MODELS.register_module('psIN1d')
class PostShiftedInstanceNorm1d(_PostShiftedInstanceNormMixin,
                                nn.InstanceNorm1d, _InstanceNorm):
    """InstanceNorm1d with a post-shift (psIN1d, mmcv's ``'IN1d'``); see
    :class:`PostShiftedInstanceNorm2d`."""

    ps_kind = 'psIN1d'
    plain_type = 'IN1d'


@MODELS.register_module(['psIN', 'psIN2d'])
class PostShiftedInstanceNorm2d(_PostShiftedInstanceNormMixin,
                                nn.InstanceNorm2d, _InstanceNorm):
    """InstanceNorm2d with a constant post-shift :math:`\\alpha` (psIN).

    Registered as ``'psIN'`` and ``'psIN2d'`` (mmcv's ``'IN'``/``'IN2d'``).
    Arguments are ``nn.InstanceNorm2d``'s plus the keyword-only ``alpha``,
    with torch's defaults, but ``affine=True`` must be given: with torch's
    default ``affine=False`` there is no :math:`\\beta` to die or to carry
    :math:`\\alpha`, and the constructor refuses. Named ``in`` by
    ``build_norm_layer``; the checkpoint contract is psBN's.
    """

    ps_kind = 'psIN'
    plain_type = 'IN'


@MODELS.register_module('psIN3d')
class PostShiftedInstanceNorm3d(_PostShiftedInstanceNormMixin,
                                nn.InstanceNorm3d, _InstanceNorm):
    """InstanceNorm3d with a post-shift (psIN3d, mmcv's ``'IN3d'``); see
    :class:`PostShiftedInstanceNorm2d`."""

    ps_kind = 'psIN3d'
    plain_type = 'IN3d'


@MODELS.register_module('psSyncBN')
class PostShiftedSyncBatchNorm(_PostShiftMixin, nn.SyncBatchNorm, _BatchNorm):
    """SyncBatchNorm with a constant post-shift :math:`\\alpha` (psSyncBN).

    Registered as ``'psSyncBN'``. Arguments are ``nn.SyncBatchNorm``'s plus
    the keyword-only ``alpha`` (see :class:`PostShiftedBatchNorm2d`).

    Note:
        Convert with :meth:`convert_sync_psbn` / :meth:`revert_sync_psbn`.
        ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` and mmengine's
        ``convert_sync_batchnorm``/``revert_sync_batchnorm`` build plain
        layers and drop :math:`\\alpha`, unless ``mmdet_psbn`` has been
        imported (it makes them route ps layers here).
    """

    ps_kind = 'psSyncBN'
    plain_type = 'SyncBN'
    #: What :meth:`revert_sync_psbn` builds: psBN (2d) for a layer built as
    #: psSyncBN, the class it came from for one :meth:`convert_sync_psbn`
    #: built (psBN1d stays 1d, psBN3d 3d).
    _revert_cls: type = None  # PostShiftedBatchNorm2d, set below

    def _check_non_zero_input_channels(self, input: Tensor) -> None:
        # SyncBatchNorm's second input check: see _check_input_dim.
        if not isinstance(input, Proxy):
            super()._check_non_zero_input_channels(input)

    @classmethod
    def convert_sync_psbn(cls,
                          module: nn.Module,
                          process_group=None) -> nn.Module:
        """Convert every psBN/psSyncBN layer in ``module`` to psSyncBN.

        Parameters and buffers (``alpha`` included) are shared with the old
        layer, as torch's converter does. Other layers are left alone.

        Args:
            module (nn.Module): The model, or a single layer.
            process_group (optional): Process group to synchronise over;
                ``None`` means the whole world.

        Returns:
            nn.Module: ``module``, or the new layer if ``module`` itself is a
            ps layer.
        """
        if is_psbn(module):
            new = _share_into(module, cls, process_group=process_group)
            new._revert_cls = (
                module._revert_cls if isinstance(
                    module, PostShiftedSyncBatchNorm) else type(module))
            return new
        for name, child in module.named_children():
            module.add_module(name,
                              cls.convert_sync_psbn(child, process_group))
        return module

    @classmethod
    def revert_sync_psbn(cls, module: nn.Module) -> nn.Module:
        """Convert every psSyncBN layer in ``module`` back to psBN.

        A layer :meth:`convert_sync_psbn` made becomes the class it was made
        from (psBN1d, psBN, psBN3d); one built as psSyncBN becomes psBN
        (2d, whose input check wants 4-d input; mmengine's own revert builds
        the dimension-free ``_BatchNormXd`` instead). Parameters and buffers
        are shared. Returns ``module``, or the new layer if ``module`` itself
        is psSyncBN.
        """
        if isinstance(module, cls):
            return _share_into(module, module._revert_cls)
        for name, child in module.named_children():
            module.add_module(name, cls.revert_sync_psbn(child))
        return module


PostShiftedSyncBatchNorm._revert_cls = PostShiftedBatchNorm2d


def _bn_kwargs(module: nn.Module) -> dict:
    kwargs = dict(
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats)
    if module.affine and module.bias is None:
        kwargs['bias'] = False  # only torch versions with BN(bias=...)
    return kwargs


def _copy_module_attrs(src: nn.Module, dst: nn.Module) -> nn.Module:
    dst.train(src.training)
    if hasattr(src, 'qconfig'):
        dst.qconfig = src.qconfig
    return dst


def _share_into(src: nn.Module, cls: type, **kwargs) -> nn.Module:
    """Build ``cls`` like ``src`` (a ps layer) sharing its tensors."""
    dst = cls(
        src.num_features, **_bn_kwargs(src), alpha=src.alpha.item(), **kwargs)
    with torch.no_grad():
        for name in ('weight', 'bias'):
            setattr(dst, name, getattr(src, name))
    for name in ('running_mean', 'running_var', 'num_batches_tracked',
                 'alpha'):
        setattr(dst, name, getattr(src, name))
    return _copy_module_attrs(src, dst)


# Exact types only: a BN subclass may carry behaviour (frozen, fused
# activation...) that a psBN layer would silently lose.
_BN_TO_PSBN = {
    nn.BatchNorm1d: PostShiftedBatchNorm1d,
    nn.BatchNorm2d: PostShiftedBatchNorm2d,
    nn.BatchNorm3d: PostShiftedBatchNorm3d,
    _BatchNormXd: PostShiftedBatchNorm2d,
    nn.SyncBatchNorm: PostShiftedSyncBatchNorm,
}


def _converted(module: nn.Module, alpha: float,
               gn: bool) -> Optional[nn.Module]:
    """The ps layer ``module`` converts to, or None if it stays."""
    cls = _BN_TO_PSBN.get(type(module))
    if cls is None and not (gn and type(module) is nn.GroupNorm):
        return None
    ref = module.weight if module.weight is not None \
        else module._buffers.get('running_mean')
    factory = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
    if cls is None:
        if module.affine and module.bias is None:
            factory['bias'] = False
        return PostShiftedGroupNorm(
            module.num_channels,
            num_groups=module.num_groups,
            eps=module.eps,
            affine=module.affine,
            alpha=alpha,
            **factory)
    kwargs = dict(_bn_kwargs(module), alpha=alpha, **factory)
    if cls is PostShiftedSyncBatchNorm:
        kwargs['process_group'] = module.process_group
    return cls(module.num_features, **kwargs)


def convert_to_psbn(module: nn.Module,
                    alpha: float = DEFAULT_ALPHA,
                    *,
                    gn: bool = False) -> nn.Module:
    """Convert the BN (and, if asked, GN) layers of a model, keeping its
    function.

    ``nn.BatchNorm1d``/``2d``/``3d`` become psBN1d/psBN/psBN3d, mmengine's
    ``_BatchNormXd`` psBN, ``nn.SyncBatchNorm`` psSyncBN (same process
    group), and with ``gn=True`` ``nn.GroupNorm`` psGN (same groups). Other
    classes, subclasses of these included, are left alone (InstanceNorm too:
    build psIN from the config). The new layer loads the old one's state
    dict, so in eval mode the model computes what it did (bias := bias -
    alpha, see the module Note); ``training``, ``requires_grad``, device and
    dtype are kept. A layer without bias cannot absorb alpha and warns.

    Convert before building the optimizer: the new layers have new
    parameters.

    Args:
        module (nn.Module): The model, or a single layer.
        alpha (float): The post-shift. Defaults to 0.1.
        gn (bool): Convert ``nn.GroupNorm`` too. Defaults to False (the
            paper's psBN; GN heads such as FCOS's are a separate choice).

    Returns:
        nn.Module: ``module``, or the new layer if ``module`` itself is
        converted.
    """
    alpha = check_alpha(alpha)
    new = _converted(module, alpha, gn)
    if new is not None:
        new.load_state_dict(module.state_dict())
        for name, param in module.named_parameters(recurse=False):
            getattr(new, name).requires_grad_(param.requires_grad)
        return _copy_module_attrs(module, new)
    for name, child in module.named_children():
        new_child = convert_to_psbn(child, alpha, gn=gn)
        if new_child is not child:
            module.add_module(name, new_child)
    return module


#: The entries of a BN layer in a state dict, and psBN's ``alpha``.
BN_STATE_KEYS = ('weight', 'bias', 'running_mean', 'running_var',
                 'num_batches_tracked', 'alpha')


def bn_state_entries(state_dict: Mapping) -> Dict[str, Dict[str, Tensor]]:
    """The one scan of a state dict for BN-like layers.

    Groups the entries named in :data:`BN_STATE_KEYS` by layer prefix
    (``'backbone.bn1.'``, ``''`` for a lone layer's state dict) and keeps
    the prefixes with a ``running_mean`` (BN tracking its statistics) or an
    ``alpha`` (any ps layer: psBN, psGN, psIN), in the order of the state
    dict. A plain GN or LayerNorm layer, which has neither, is not found: in
    a state dict it looks like any other ``weight`` and ``bias``.
    :func:`find_psbn_prefixes` and
    :func:`mmdet_psbn.analysis.collapse.bn_layers_in_state_dict` read it.

    Returns:
        dict: ``{prefix: {key: tensor}}``, e.g. ``{'bn1.': {'weight': ...,
        'running_mean': ..., 'alpha': ...}}``.
    """
    groups: Dict[str, Dict[str, Tensor]] = OrderedDict()
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition('.')
        if leaf in BN_STATE_KEYS:
            groups.setdefault(prefix + '.' if prefix else '', {})[leaf] = value
    return OrderedDict((p, e) for p, e in groups.items()
                       if 'running_mean' in e or 'alpha' in e)


def find_psbn_prefixes(state_dict: Mapping) -> List[str]:
    """The prefixes (``'backbone.bn1.'``...) of ps layers in a state dict.

    A ps entry (of :func:`bn_state_entries`) is a 0-dim floating
    ``<prefix>alpha`` next to a ``<prefix>running_mean`` or
    ``<prefix>bias``: every variant (psBN1d/2d/3d, psSyncBN, psGN, psIN;
    GN and IN have no running statistics, only ``weight`` and ``bias``).
    """
    return [
        prefix for prefix, entry in bn_state_entries(state_dict).items()
        if isinstance(entry.get('alpha'), Tensor) and entry['alpha'].dim() == 0
        and entry['alpha'].is_floating_point() and (
            'running_mean' in entry or 'bias' in entry)
    ]


def fold_psbn_state_dict(state_dict: Mapping) -> 'OrderedDict[str, Tensor]':
    """Turn a ps state dict into a plain one, for deployment.

    Every ps entry (any variant, see :func:`find_psbn_prefixes`) gets
    ``bias := bias + alpha`` (the very sum the ps forward uses, so the plain
    layer's outputs equal the ps layer's: BN's for psBN, GN's for psGN, IN's
    for psIN) and loses its ``alpha`` key. Other entries, their order and
    ``_metadata`` are kept; the input is not modified.

    Raises:
        ValueError: if there is no psBN entry, or one without ``bias``
            (``affine=False``/``bias=False``: BN has nothing to carry alpha).
    """
    prefixes = find_psbn_prefixes(state_dict)
    if not prefixes:
        raise ValueError("no psBN layer found (no '<prefix>alpha' key next to "
                         "a '<prefix>running_mean' or '<prefix>bias')")
    folded = OrderedDict(state_dict)
    for prefix in prefixes:
        bias_key = prefix + 'bias'
        alpha = folded.pop(prefix + 'alpha')
        if bias_key not in state_dict:
            raise ValueError(
                f"psBN layer '{prefix[:-1] or '<root>'}' has no bias "
                f'(affine=False or bias=False): BN has no parameter to carry '
                f'alpha={alpha.item():g}')
        folded[bias_key] = state_dict[bias_key] + alpha.to(
            state_dict[bias_key].device)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        folded._metadata = metadata.copy()  # type: ignore[attr-defined]
    return folded


def fold_psbn_entries_on_load(model: nn.Module) -> RemovableHandle:
    r"""Make ``model`` load psBN entries into its plain BN layers, folded.

    A psBN checkpoint loaded into a model whose layer is plain BN (a BN
    config, or mmdet without the plugin) brings an ``alpha`` key that BN
    does not have. mmengine loads non-strictly: it logs an "unexpected key"
    and every output of the layer lacks :math:`\alpha`. After this call,
    loading ``model`` (``load_state_dict``, mmengine's ``load_checkpoint``,
    the Runner's ``load_from``/``resume``) treats every such entry as
    :func:`fold_psbn_state_dict` does:

    .. math::

        \beta_{BN} \leftarrow \beta_{ckpt} + \alpha_{ckpt}

    and drops its ``alpha``, so the layer computes what the psBN layer did;
    one info line says how many layers were folded. The same holds for a
    psGN or psIN entry loaded into plain GN or IN. Entries of ps layers,
    plain entries and other keys are untouched. Used by ``tools/train.py`` and
    ``tools/test.py`` on every model they build.

    Args:
        model (nn.Module): The model that will load (unwrapped, not DDP).

    Returns:
        RemovableHandle: The load pre-hook's handle (``.remove()`` undoes
        this).

    Raises:
        ValueError: at load time, for a psBN entry whose plain BN layer (or
            the entry) has no bias: nothing can carry :math:`\alpha`.
    """
    return model.register_load_state_dict_pre_hook(_fold_psbn_entries)


# The plain layers a ps entry folds into on load (IN is not a _BatchNorm).
_PLAIN_NORMS = (_BatchNorm, nn.GroupNorm, _InstanceNorm)


def _fold_psbn_entries(module: nn.Module, state_dict, prefix, *args) -> None:
    """The load pre-hook of :func:`fold_psbn_entries_on_load`."""
    folded = []
    for entry in find_psbn_prefixes(state_dict):
        if not entry.startswith(prefix):
            continue
        try:
            layer = module.get_submodule(entry[len(prefix):-1])
        except AttributeError:
            continue  # not a layer of this model: the loader reports it
        if not isinstance(layer, _PLAIN_NORMS) or is_post_shifted(layer):
            continue
        name = entry[:-1] or '<root>'
        bias_key = entry + 'bias'
        if layer.bias is None or bias_key not in state_dict:
            lacking = ('the checkpoint entry' if layer.bias is not None else
                       f'the {type(layer).__name__} layer')
            raise ValueError(
                f"'{name}': a psBN checkpoint entry (it has an alpha) for a "
                f'plain {type(layer).__name__} layer, and {lacking} has no '
                f'bias to fold alpha into. Build the model with the ps '
                f"layer (norm_cfg=dict(type='psBN'), 'psGN', ...) to load "
                f'this checkpoint')
        alpha = state_dict.pop(entry + 'alpha')
        bias = state_dict[bias_key]
        state_dict[bias_key] = bias + alpha.to(bias.device)
        folded.append((name, alpha.item()))
    if folded:
        alphas = ', '.join(f'{a:g}' for a in sorted({a for _, a in folded}))
        print_log(
            f'psBN checkpoint entries for {len(folded)} layers that are '
            f'plain BN in this model (first: {folded[0][0]}) loaded with '
            f'bias := bias + alpha (alpha={alphas}), so they compute what '
            f'the psBN layers did. To train or test psBN itself use '
            f"norm_cfg=dict(type='psBN'); to convert the file once: python "
            f'tools/psbn2bn.py CKPT OUT',
            logger='current',
            level=logging.INFO)
