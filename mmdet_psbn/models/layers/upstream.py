# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Make the upstream routes that rebuild or read BN layers keep psBN's alpha.

All the upstream-awareness of the psBN layers lives here.
:func:`install_upstream_patches` runs on ``import mmdet_psbn``; it is
idempotent (a second call, or a reload of this module, wraps nothing twice).
Each wrapper sends ps layers to our code and everything else to the original
function, unchanged; a model without ps layers goes to the original whole.
The original stays reachable as ``wrapper.__wrapped__``. Written against
torch 2.13, mmengine 0.10.7, mmcv 2.1.0 and mmdet 3.3.0.

=======================================  =====================================
upstream function                        what it does to a ps layer
=======================================  =====================================
``torch.nn.SyncBatchNorm``               matches any ``_BatchNorm`` (psBN,
``.convert_sync_batchnorm``              psSyncBN) and builds a plain
                                         ``SyncBatchNorm``: alpha is lost.
mmengine ``convert_sync_batchnorm``      same, for ``sync_bn='torch'`` or
(``Runner`` when distributed)            ``'mmcv'``.
mmengine ``revert_sync_batchnorm``       turns any ``SyncBatchNorm`` (psSyncBN
(``Runner`` ALWAYS when not              included) into ``_BatchNormXd``: a
distributed; mmdet's ``init_detector``)  psSyncBN config on one GPU/CPU would
                                         train and infer without alpha.
mmengine / mmcv                          read ``bn.bias`` to fold BN into the
``efficient_conv_bn_eval_forward``       conv: the output lacks alpha.
mmengine ``turn_on_efficient_conv_bn_``  ``fx.symbolic_trace`` treats only
``eval_for_single_model``                ``torch.nn`` classes as leaves: it
                                         traces through psBN's forward into a
                                         functional ``batch_norm``, which the
                                         graph transform (it pairs
                                         ``call_module`` conv and BN nodes)
                                         leaves unfused.
mmcv ``_fuse_conv_bn``                   reads ``bn.bias``: the fused conv
                                         lacks alpha.
``torch.nn.utils.fuse_conv_bn_eval``     reads ``bn.bias``: the fused conv
(also ``torch.nn.utils.fusion``; eager   lacks alpha.
quantization's conv-BN fusers call it)
``torch.ao.quantization``                finds fusers by exact type: refuses
``fuser_method_mappings``                psBN ("did not find fuser method").
``.get_fuser_method`` (``fuse_modules``  Here psBN fuses as BN does
and ``fuse_modules_qat``)                (``fuse_conv_bn_eval`` above), and
                                         QAT fusion, whose ``ConvBn2d``
                                         rebuilds BN from ``bn.bias``, is
                                         refused with the fix.
=======================================  =====================================

Not wrapped: ``torch.nn.utils.fuse_conv_bn_weights`` takes tensors, not the
layer, so it cannot know alpha; a caller that passes a psBN layer's
``bn.bias`` gets BN's fusion. Call it inside
:meth:`~.psbn._PostShiftMixin.post_shift_folded` (``with
bn.post_shift_folded(): fuse_conv_bn_weights(..., bn.weight, bn.bias)``),
where ``bn.bias`` is :math:`\\beta + \\alpha`.

How to remove a wrapper: when upstream rebuilds BN layers with
``type(module)``-aware code (or a hook for subclasses), and computes conv-BN
folds through an overridable method instead of reading ``bn.bias``, delete its
entry from :func:`install_upstream_patches`; ``tests/test_models`` checks for
each that the original drops alpha (``get_fuser_method``: refuses psBN), so
that test fails first and says which.
"""
import importlib
import sys
from types import ModuleType
from typing import Callable

import torch.nn as nn

from .psbn import (PostShiftedBatchNorm2d, PostShiftedSyncBatchNorm,
                   is_psbn)

__all__ = ['install_upstream_patches', 'contains_psbn']

_MARK = '__psbn_patch__'


def contains_psbn(module: nn.Module) -> bool:
    """Whether ``module`` or any of its descendants is a ps layer."""
    return any(is_psbn(m) for m in module.modules())


def _route(module: nn.Module, convert_ps: Callable,
           convert_other: Callable) -> nn.Module:
    """Walk the tree: ps layers to ``convert_ps``, subtrees without ps layers
    to ``convert_other`` (the original function), containers recurse.

    The original is never called on a subtree holding a ps layer: it would
    rebuild it (or the psSyncBN we just built) as a plain layer.
    """
    if is_psbn(module):
        return convert_ps(module)
    if not contains_psbn(module):
        return convert_other(module)
    for name, child in module.named_children():
        module.add_module(name, _route(child, convert_ps, convert_other))
    return module


def _mark(wrapper: Callable, original: Callable) -> Callable:
    wrapper.__wrapped__ = original
    wrapper.__name__ = original.__name__
    setattr(wrapper, _MARK, True)
    return wrapper


def _wrap_function(module: ModuleType, name: str,
                   make: Callable) -> Callable:
    """Replace ``module.name`` by ``make(original)`` unless done already, and
    rebind every already imported module that holds the original under the
    same name (``from mmengine.model import revert_sync_batchnorm``: the
    Runner, mmengine's strategies, ``mmdet.apis`` ``init_detector``...).
    Modules imported later read the patched attribute anyway.
    """
    current = getattr(module, name)
    if getattr(current, _MARK, False):
        wrapper, original = current, current.__wrapped__
    else:
        original = current
        wrapper = _mark(make(original), original)
        setattr(module, name, wrapper)
    for user in list(sys.modules.values()):
        namespace = getattr(user, '__dict__', None)
        if isinstance(namespace, dict) and namespace.get(name) is original:
            setattr(user, name, wrapper)
    return wrapper


# --- torch -------------------------------------------------------------------
def _make_torch_convert(original: Callable) -> Callable:

    def convert_sync_batchnorm(cls, module, process_group=None):
        """``nn.SyncBatchNorm.convert_sync_batchnorm`` keeping alpha.

        Upstream matches every ``_BatchNorm`` and builds a plain
        ``nn.SyncBatchNorm`` (copying weight, bias, statistics only), so psBN
        and psSyncBN lose alpha. Here ps layers become psSyncBN (same alpha,
        same tensors) and the rest goes to the original.
        """
        if not contains_psbn(module):
            return original(cls, module, process_group)
        return _route(
            module, lambda m: PostShiftedSyncBatchNorm.convert_sync_psbn(
                m, process_group), lambda m: original(cls, m, process_group))

    return convert_sync_batchnorm


def _make_fuse_conv_bn_eval(original: Callable) -> Callable:

    def fuse_conv_bn_eval(conv, bn, transpose=False):
        """``torch.nn.utils.fuse_conv_bn_eval`` keeping alpha.

        Upstream passes ``bn.bias`` to ``fuse_conv_bn_weights``, so the fused
        conv computes BN, not psBN. Here it reads beta + alpha: the fused
        conv's output equals conv -> psBN in eval mode.
        """
        if not is_psbn(bn):
            return original(conv, bn, transpose)
        with bn.post_shift_folded():
            return original(conv, bn, transpose)

    return fuse_conv_bn_eval


def _ps_fuser(fuser: Callable, op_list: tuple) -> Callable:
    """``fuser`` (found for BN in place of psBN) for eager fusion only."""

    def fuse_psbn(is_qat, *modules):
        if is_qat:
            names = ', '.join(t.__name__ for t in op_list)
            raise ValueError(
                f'fuse_modules_qat cannot fuse ({names}): QAT fusion '
                f'(ConvBn2d and its qat.ConvBn2d) rebuilds BN from weight, '
                f'bias and running statistics, and alpha would be lost. '
                f'Fold alpha into the bias first and quantise a BN model: '
                f'`python tools/psbn2bn.py CKPT OUT` (fold_psbn_state_dict) '
                f"and norm_cfg=dict(type='BN'); or fuse for inference with "
                f'fuse_modules, which keeps alpha')
        return fuser(is_qat, *modules)

    return fuse_psbn


def _make_get_fuser_method(original: Callable) -> Callable:

    def get_fuser_method(op_list, additional_fuser_method_mapping=None):
        """torch.ao's ``get_fuser_method`` knowing psBN.

        Upstream looks the exact types up in its table, which has
        ``nn.BatchNorm2d`` but not psBN, and refuses. Here a psBN in
        ``op_list`` gets BN's fuser (it calls ``fuse_conv_bn_eval``, which
        keeps alpha, see above) for eager fusion; QAT fusion is refused.
        A mapping the caller passes for the psBN types wins.
        """
        if (PostShiftedBatchNorm2d not in op_list or op_list in
            (additional_fuser_method_mapping or {})):
            return original(op_list, additional_fuser_method_mapping)
        bn_ops = tuple(nn.BatchNorm2d if op is PostShiftedBatchNorm2d else op
                       for op in op_list)
        return _ps_fuser(
            original(bn_ops, additional_fuser_method_mapping), op_list)

    return get_fuser_method


def _patch_torch() -> None:
    # Imported here so that the wrappers bind where they are used by name
    # (torch.nn.utils, fuse_modules); modules imported later read the
    # patched attribute anyway.
    # import_module: the package attribute ``fuse_modules`` is a function.
    importlib.import_module('torch.ao.quantization.fuse_modules')
    fuser_method_mappings = importlib.import_module(
        'torch.ao.quantization.fuser_method_mappings')
    fusion = importlib.import_module('torch.nn.utils.fusion')
    _wrap_function(fusion, 'fuse_conv_bn_eval', _make_fuse_conv_bn_eval)
    _wrap_function(fuser_method_mappings, 'get_fuser_method',
                   _make_get_fuser_method)
    cm = nn.SyncBatchNorm.__dict__['convert_sync_batchnorm']
    if getattr(cm.__func__, _MARK, False):
        return
    nn.SyncBatchNorm.convert_sync_batchnorm = classmethod(
        _mark(_make_torch_convert(cm.__func__), cm.__func__))


# --- mmengine ----------------------------------------------------------------
def _make_mmengine_convert(original: Callable) -> Callable:

    def convert_sync_batchnorm(module, implementation='torch'):
        """mmengine's ``convert_sync_batchnorm`` keeping alpha.

        Upstream (called by the Runner with ``cfg.sync_bn`` when distributed)
        builds a plain torch or mmcv SyncBatchNorm for every ``_BatchNorm``.
        Here, with ``'torch'``, ps layers become psSyncBN; with ``'mmcv'``
        (no ps variant exists) a model holding ps layers is refused.
        """
        if not contains_psbn(module):
            return original(module, implementation)
        if implementation != 'torch':
            raise ValueError(
                f'sync_bn={implementation!r} would replace the psBN layers of '
                f'this model by a SyncBatchNorm without alpha (the post-shift '
                f"would be lost). Use sync_bn='torch' (psBN -> psSyncBN), or "
                f"norm_cfg=dict(type='psSyncBN') and no sync_bn.")
        return _route(module, PostShiftedSyncBatchNorm.convert_sync_psbn,
                      lambda m: original(m, implementation))

    return convert_sync_batchnorm


def _make_mmengine_revert(original: Callable) -> Callable:

    def revert_sync_batchnorm(module):
        """mmengine's ``revert_sync_batchnorm`` keeping alpha.

        Upstream turns every torch/mmcv SyncBatchNorm, subclasses included,
        into ``_BatchNormXd``. The Runner calls it on every non-distributed
        run. Here psSyncBN becomes psBN (same alpha, same tensors).
        """
        if not contains_psbn(module):
            return original(module)
        return _route(module, PostShiftedSyncBatchNorm.revert_sync_psbn,
                      original)

    return revert_sync_batchnorm


def _make_efficient_forward(original: Callable) -> Callable:

    def efficient_conv_bn_eval_forward(bn, conv, x):
        """``efficient_conv_bn_eval_forward`` keeping alpha.

        Upstream folds BN into the conv weights from ``bn.weight``,
        ``bn.bias`` and the running statistics, so a psBN output would lack
        alpha. Here it runs with ``bn.bias`` = beta + alpha.
        """
        if not is_psbn(bn):
            return original(bn, conv, x)
        with bn.post_shift_folded(x.dtype):
            return original(bn, conv, x)

    return efficient_conv_bn_eval_forward


def _make_turn_on_single(original: Callable) -> Callable:

    def turn_on_efficient_conv_bn_eval_for_single_model(model):
        """mmengine's efficient conv-BN eval transform, tracing ps layers as
        leaves.

        Upstream runs ``fx.symbolic_trace(model)``, which keeps only
        ``torch.nn`` modules as ``call_module`` nodes: it traces through
        psBN's forward (BN's ``batch_norm`` call with beta + alpha), then
        ``efficient_conv_bn_eval_graph_transform``, which pairs a conv node
        with a BN *module* node, finds no psBN pair and fuses none. Here the
        trace keeps ps layers as ``call_module`` nodes so the same transform
        pairs them with their conv (and the forward above keeps alpha).
        """
        if not contains_psbn(model):
            return original(model)
        import torch.fx as fx
        from mmengine.model import efficient_conv_bn_eval as ecbe

        class PsbnLeafTracer(fx.Tracer):

            def is_leaf_module(self, m, module_qualified_name):
                return is_psbn(m) or super().is_leaf_module(
                    m, module_qualified_name)

        tracer = PsbnLeafTracer()
        graph = tracer.trace(model)
        fx_model = fx.GraphModule(tracer.root, graph,
                                  model.__class__.__name__)
        ecbe.efficient_conv_bn_eval_graph_transform(fx_model)
        model.forward = fx_model.forward

    return turn_on_efficient_conv_bn_eval_for_single_model


def _patch_mmengine() -> None:
    from mmengine.model import efficient_conv_bn_eval as ecbe
    from mmengine.model import utils
    _wrap_function(utils, 'convert_sync_batchnorm', _make_mmengine_convert)
    _wrap_function(utils, 'revert_sync_batchnorm', _make_mmengine_revert)
    _wrap_function(ecbe, 'efficient_conv_bn_eval_forward',
                   _make_efficient_forward)
    _wrap_function(ecbe, 'turn_on_efficient_conv_bn_eval_for_single_model',
                   _make_turn_on_single)


# --- mmcv --------------------------------------------------------------------
def _make_fuse_conv_bn(original: Callable) -> Callable:

    def _fuse_conv_bn(conv, bn):
        """mmcv's ``_fuse_conv_bn`` keeping alpha.

        Upstream (used by ``mmcv.cnn.fuse_conv_bn``) computes the fused conv
        bias from ``bn.bias``. Here it reads beta + alpha.
        """
        if not is_psbn(bn):
            return original(conv, bn)
        with bn.post_shift_folded():
            return original(conv, bn)

    return _fuse_conv_bn


def _patch_mmcv() -> None:
    try:
        # import_module: the package attribute ``fuse_conv_bn`` is the
        # function of the same name, not the module that defines it.
        conv_module = importlib.import_module('mmcv.cnn.bricks.conv_module')
        fuse_module = importlib.import_module('mmcv.cnn.utils.fuse_conv_bn')
    except ImportError:  # no mmcv: nothing of it to patch
        return
    # ConvModule binds this function at construction (when built with
    # efficient_conv_bn_eval=True), so the patch must precede model building,
    # which importing mmdet_psbn (needed for psBN configs) guarantees.
    if hasattr(conv_module, 'efficient_conv_bn_eval_forward'):
        _wrap_function(conv_module, 'efficient_conv_bn_eval_forward',
                       _make_efficient_forward)
    _wrap_function(fuse_module, '_fuse_conv_bn', _make_fuse_conv_bn)


def install_upstream_patches() -> None:
    """Install every wrapper of this module (idempotent)."""
    _patch_torch()
    _patch_mmengine()
    _patch_mmcv()
