# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Make the upstream routes that rebuild or read BN layers keep psBN's alpha.

All the upstream-awareness of the psBN layers lives here, and this docstring
says everything ``import mmdet_psbn`` changes outside the package
(``docs/upstream.md`` explains it for users):

1. The functions of :data:`PATCHES`, the one table of them: each is replaced
   where it is defined and at the places listed with it that import it by
   name, and nowhere else. Each wrapper sends ps layers to our code and
   everything else to the original function, unchanged; a model without ps
   layers goes to the original whole. The original stays reachable as
   ``wrapper.__wrapped__``. The table's last three rows are not about
   alpha: they make mmengine's checkpoint saving and ``--resume`` survive a
   kill mid-save (fix 3 of :mod:`mmdet_psbn.compat`, whose wrappers they
   use).
2. torch's ``weights_only`` allow-list gains
   :data:`mmdet_psbn.compat.MMENGINE_CHECKPOINT_GLOBALS` (mmengine's
   ``HistoryBuffer``, numpy's array, scalar and dtype classes, a ``getattr``
   restricted to HistoryBuffer's methods):
   :func:`mmdet_psbn.compat.register_safe_globals`, so that ``--resume``
   works with torch >= 2.6.
3. mmengine's root registries gain the package's own names (``MODELS``:
   ``psBN``/``psBN2d``, ``psBN1d``, ``psBN3d``, ``psSyncBN``, ``psGN``,
   ``psIN``/``psIN2d``, ``psIN1d``, ``psIN3d``; ``HOOKS``:
   ``CollapseMonitorHook``).

The patches concern the ps *BatchNorm* layers (:func:`~.psbn.is_psbn`):
upstream's SyncBN converters match ``_BatchNorm`` only and its conv-BN
fusions take BN layers, so psGN and psIN never reach them, and no upstream
code fuses a conv with GN or IN: there is nothing to wrap for them.

Nothing else: :func:`mmdet_psbn.compat.setup_cpu_distributed` changes a
config and starts a process group only when ``tools/train.py`` or
``tools/test.py`` calls it, and :func:`mmdet_psbn.compat.use_cpu_amp`
registers ``CPUAmpOptimWrapper`` in the root ``OPTIM_WRAPPERS`` only when
``tools/train.py --amp`` runs without CUDA (or a user calls it).

:func:`install_upstream_patches` runs on import. Written against torch 2.13,
mmengine 0.10.7, mmcv 2.1.0 and mmdet 3.3.0. For each :class:`Patch`:

- ``target`` is imported and its ``name`` replaced; a patch whose package is
  not installed (no mmcv) is skipped. A second call, or a reload of this
  module, wraps nothing twice.
- Each ``also_at`` module that is imported already and holds the original
  under ``name`` is rebound. One that is not imported yet is not imported
  here (``mmdet.apis`` or ``torch._inductor`` would add seconds to every
  import): it takes ``name`` from the target or from another ``also_at``
  module, so it binds the wrapper when it is imported. The tests check both
  orders, and sweep ``sys.modules`` for any module still holding an
  original: a new upstream import site fails a test, not a user's run.
- A place that lacks ``name``, or holds something else there, means that
  upstream changed: it is left alone and :class:`UpstreamPatchWarning` names
  the patch and the place. A warning, not an error: psBN still trains and
  infers; only that one route may drop alpha. Our tests turn the warning
  into an error, so with the pinned versions it cannot pass unnoticed.

Not wrapped: ``torch.nn.utils.fuse_conv_bn_weights`` takes tensors, not the
layer, so it cannot know alpha; a caller that passes a psBN layer's
``bn.bias`` gets BN's fusion. Call it inside
:meth:`~.psbn._PostShiftMixin.post_shift_folded` (``with
bn.post_shift_folded(): fuse_conv_bn_weights(..., bn.weight, bn.bias)``),
where ``bn.bias`` is :math:`\\beta + \\alpha`.

How to remove a patch: each names its ``test``, which shows the upstream bug
on ``wrapper.__wrapped__``. When upstream rebuilds BN layers with
``type(module)``-aware code (or a hook for subclasses), or computes conv-BN
folds through an overridable method instead of reading ``bn.bias``, that
test fails: delete the entry from :data:`PATCHES`, its ``_make_*`` function,
its row in ``docs/upstream.md``, and the test.
"""
import importlib
import sys
import warnings
from typing import Callable, NamedTuple, Optional, Tuple

import torch.nn as nn

from ... import compat
from .psbn import (PostShiftedBatchNorm1d, PostShiftedBatchNorm2d,
                   PostShiftedBatchNorm3d, PostShiftedSyncBatchNorm,
                   is_post_shifted, is_psbn)

__all__ = [
    'install_upstream_patches', 'contains_psbn', 'Patch', 'PATCHES',
    'UpstreamPatchWarning'
]

_MARK = '__psbn_patch__'
_MISSING = object()


class UpstreamPatchWarning(UserWarning):
    """A place named in :data:`PATCHES` is not what the patch expects."""


class Patch(NamedTuple):
    """One upstream function replaced by a psBN-aware wrapper.

    Attributes:
        target (str): The module that defines the function.
        name (str): Its name there; ``'Class.method'`` for a classmethod.
        make (Callable): ``make(original)`` returns the wrapper.
        also_at (tuple[str]): The other modules that bind the function by
            name (``from target import name``) and call it from there; they
            are rebound too. Nothing else is.
        why (str): What the original does to a ps layer.
        test (str): The test, as a path relative to ``tests/test_models``
            and ``::name``, that shows it on the original and fails once
            upstream is fixed.
    """
    target: str
    name: str
    make: Callable
    also_at: Tuple[str, ...]
    why: str
    test: str

    @property
    def label(self) -> str:
        """``target.name``, as the docs and the warnings name the patch."""
        return f'{self.target}.{self.name}'


def contains_psbn(module: nn.Module) -> bool:
    """Whether ``module`` or any of its descendants is a ps BatchNorm layer
    (:func:`~.psbn.is_psbn`; psGN and psIN are no BatchNorm: upstream's
    converters and fusions leave them alone, alpha included)."""
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


def _make_fuse_linear_bn_eval(original: Callable) -> Callable:

    def fuse_linear_bn_eval(linear, bn):
        """``torch.nn.utils.fuse_linear_bn_eval`` keeping alpha.

        Upstream reads ``bn.bias`` (a Linear followed by BatchNorm1d), so the
        fused Linear computes BN, not psBN1d. Here it reads beta + alpha.
        """
        if not is_psbn(bn):
            return original(linear, bn)
        with bn.post_shift_folded():
            return original(linear, bn)

    return fuse_linear_bn_eval


# The plain class whose fuser a ps class in op_list gets.
_PS_TO_BN = {
    PostShiftedBatchNorm1d: nn.BatchNorm1d,
    PostShiftedBatchNorm2d: nn.BatchNorm2d,
    PostShiftedBatchNorm3d: nn.BatchNorm3d,
}


def _make_get_fuser_method(original: Callable) -> Callable:

    def get_fuser_method(op_list, additional_fuser_method_mapping=None):
        """torch.ao's ``get_fuser_method`` knowing psBN1d, psBN, psBN3d.

        Upstream looks the exact types up in its table, which has
        ``nn.BatchNorm1d/2d/3d`` but not the ps classes, and refuses. Here a
        ps class in ``op_list`` gets the plain class's fuser (it calls
        ``fuse_conv_bn_eval`` or ``fuse_linear_bn_eval``, which keep alpha,
        see above) for eager fusion; QAT fusion is refused. A mapping the
        caller passes for the ps types wins.
        """
        if (not any(op in _PS_TO_BN for op in op_list)
                or op_list in (additional_fuser_method_mapping or {})):
            return original(op_list, additional_fuser_method_mapping)
        bn_ops = tuple(_PS_TO_BN.get(op, op) for op in op_list)
        return _ps_fuser(
            original(bn_ops, additional_fuser_method_mapping), op_list)

    return get_fuser_method


# --- mmengine ----------------------------------------------------------------
def _make_mmengine_convert(original: Callable) -> Callable:

    def convert_sync_batchnorm(module, implementation='torch'):
        """Mmengine's ``convert_sync_batchnorm`` keeping alpha.

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
        """Mmengine's ``revert_sync_batchnorm`` keeping alpha.

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
        """Mmengine's efficient conv-BN eval transform, tracing ps layers as
        leaves.

        Upstream runs ``fx.symbolic_trace(model)``, which keeps only
        ``torch.nn`` modules as ``call_module`` nodes: it traces through
        psBN's forward (BN's ``batch_norm`` call with beta + alpha), then
        ``efficient_conv_bn_eval_graph_transform``, which pairs a conv node
        with a BN *module* node, finds no psBN pair and fuses none. Here the
        trace keeps ps layers as ``call_module`` nodes so the same transform
        pairs them with their conv (and the forward above keeps alpha).
        Every ps layer is a leaf, psGN and psIN too (the transform leaves
        them alone): InstanceNorm's forward branches on the input's shape,
        which fx cannot trace through.
        """
        if not any(is_post_shifted(m) for m in model.modules()):
            return original(model)
        import torch.fx as fx
        from mmengine.model import efficient_conv_bn_eval as ecbe

        class PsbnLeafTracer(fx.Tracer):

            def is_leaf_module(self, m, module_qualified_name):
                return is_post_shifted(m) or super().is_leaf_module(
                    m, module_qualified_name)

        tracer = PsbnLeafTracer()
        graph = tracer.trace(model)
        fx_model = fx.GraphModule(tracer.root, graph, model.__class__.__name__)
        ecbe.efficient_conv_bn_eval_graph_transform(fx_model)
        model.forward = fx_model.forward

    return turn_on_efficient_conv_bn_eval_for_single_model


# --- mmcv --------------------------------------------------------------------
def _make_fuse_conv_bn(original: Callable) -> Callable:

    def _fuse_conv_bn(conv, bn):
        """Mmcv's ``_fuse_conv_bn`` keeping alpha.

        Upstream (used by ``mmcv.cnn.fuse_conv_bn``) computes the fused conv
        bias from ``bn.bias``. Here it reads beta + alpha.
        """
        if not is_psbn(bn):
            return original(conv, bn)
        with bn.post_shift_folded():
            return original(conv, bn)

    return _fuse_conv_bn


# --- the table ---------------------------------------------------------------
_EFFICIENT_WHY = ('folds BN into the conv from bn.weight, bn.bias and the '
                  'running statistics: the output lacks alpha.')

#: Every upstream function ``import mmdet_psbn`` replaces, and where.
PATCHES: Tuple[Patch, ...] = (
    Patch(
        target='torch.nn.modules.batchnorm',
        name='SyncBatchNorm.convert_sync_batchnorm',
        make=_make_torch_convert,
        also_at=(),  # a classmethod: callers reach it through the class
        why='matches any _BatchNorm (psBN, psSyncBN) and builds a plain '
        'SyncBatchNorm: alpha is lost.',
        test='test_psbn_upstream.py::test_torch_convert_upstream_drops_alpha'),
    Patch(
        target='mmengine.model.utils',
        name='convert_sync_batchnorm',
        make=_make_mmengine_convert,
        # Runner.wrap_model (cfg.sync_bn), DDPStrategy.convert_model.
        also_at=('mmengine.model', 'mmengine.runner.runner',
                 'mmengine._strategy.distributed'),
        why="same, for the Runner's sync_bn='torch' or 'mmcv'.",
        test='test_psbn_upstream.py::'
        'test_mmengine_converters_upstream_drop_alpha'),
    Patch(
        target='mmengine.model.utils',
        name='revert_sync_batchnorm',
        make=_make_mmengine_revert,
        # Runner.wrap_model (every non-distributed run),
        # SingleDeviceStrategy, mmdet's init_detector and DetInferencer.
        also_at=('mmengine.model', 'mmengine.runner.runner',
                 'mmengine._strategy.single_device', 'mmdet.apis.inference',
                 'mmdet.apis.det_inferencer'),
        why='turns any SyncBatchNorm (psSyncBN included) into _BatchNormXd: '
        'a psSyncBN config on one GPU or CPU would train and infer without '
        'alpha.',
        test='test_psbn_upstream.py::'
        'test_mmengine_converters_upstream_drop_alpha'),
    Patch(
        target='mmengine.model.efficient_conv_bn_eval',
        name='efficient_conv_bn_eval_forward',
        make=_make_efficient_forward,
        also_at=(),
        why=_EFFICIENT_WHY,
        test='test_psbn_upstream.py::'
        'test_efficient_conv_bn_eval_upstream_drops_alpha'),
    Patch(
        target='mmengine.model.efficient_conv_bn_eval',
        name='turn_on_efficient_conv_bn_eval_for_single_model',
        make=_make_turn_on_single,
        also_at=(),
        why='fx.symbolic_trace keeps only torch.nn classes as leaves: it '
        "traces through psBN's forward into a functional batch_norm, which "
        'the graph transform (it pairs call_module conv and BN nodes) '
        "leaves unfused; through psIN's it fails (shape branches).",
        test='test_psbn_upstream.py::'
        'test_efficient_conv_bn_eval_upstream_drops_alpha'),
    Patch(
        # mmcv's own copy of mmengine's function. ConvModule binds it at
        # construction (efficient_conv_bn_eval=True), so the patch must
        # precede model building, which importing mmdet_psbn (needed for
        # psBN configs) guarantees.
        target='mmcv.cnn.bricks.conv_module',
        name='efficient_conv_bn_eval_forward',
        make=_make_efficient_forward,
        also_at=(),
        why=_EFFICIENT_WHY,
        test='test_psbn_upstream.py::'
        'test_mmcv_conv_module_efficient_upstream_drops_alpha'),
    Patch(
        target='mmcv.cnn.utils.fuse_conv_bn',
        name='_fuse_conv_bn',
        make=_make_fuse_conv_bn,
        also_at=(),  # called by mmcv.cnn.fuse_conv_bn, from its module
        why='reads bn.bias: the fused conv lacks alpha.',
        test='test_psbn_upstream.py::'
        'test_mmcv_fuse_conv_bn_upstream_drops_alpha'),
    Patch(
        target='torch.nn.utils.fusion',
        name='fuse_conv_bn_eval',
        make=_make_fuse_conv_bn_eval,
        # Eager quantization's conv-BN fusers call it as
        # nn.utils.fusion.fuse_conv_bn_eval. torch.fx's fuse and inductor's
        # pre-grad pass only fuse exact nn.BatchNorm types (never a ps
        # layer): rebound so that no module holds the original.
        also_at=('torch.nn.utils', 'torch.fx.experimental.optimization',
                 'torch._inductor.fx_passes.pre_grad'),
        why='reads bn.bias: the fused conv lacks alpha.',
        test='test_psbn_init_fuse_trace.py::'
        'test_fuse_conv_bn_eval_upstream_drops_alpha'),
    Patch(
        target='torch.nn.utils.fusion',
        name='fuse_linear_bn_eval',
        make=_make_fuse_linear_bn_eval,
        # Eager quantization's fuse_linear_bn calls it as
        # nn.utils.fusion.fuse_linear_bn_eval; torch.fx's fuse only fuses
        # exact nn.BatchNorm1d (never a ps layer): rebound so that no module
        # holds the original.
        also_at=('torch.nn.utils', 'torch.fx.experimental.optimization'),
        why='reads bn.bias: the fused Linear lacks alpha (psBN1d).',
        test='test_ps_variants.py::'
        'test_fuse_linear_bn_eval_upstream_drops_alpha'),
    Patch(
        target='torch.ao.quantization.fuser_method_mappings',
        name='get_fuser_method',
        make=_make_get_fuser_method,
        # fuse_modules and fuse_modules_qat, and the torch.quantization shims.
        # The wrapper fuses psBN as BN (fuse_conv_bn_eval above keeps alpha)
        # and refuses QAT fusion, whose ConvBn2d rebuilds BN from bn.bias.
        also_at=('torch.ao.quantization', 'torch.ao.quantization.fuse_modules',
                 'torch.quantization', 'torch.quantization.fuse_modules',
                 'torch.quantization.fuser_method_mappings'),
        why='finds fusers by exact type: refuses psBN, psBN1d, psBN3d ("did '
        'not find fuser method"), so fuse_modules cannot fuse a psBN model.',
        test='test_psbn_init_fuse_trace.py::'
        'test_fuse_modules_upstream_refuses_psbn'),
    # --- not about alpha: mmengine's checkpoints and a kill (compat fix 3) --
    Patch(
        target='mmengine.fileio.backends.local_backend',
        name='LocalBackend.put',
        make=compat._make_atomic_put,
        also_at=(),  # a method: callers reach it through the instance
        why='writes in place: a kill mid-save leaves a truncated checkpoint '
        'under its final name.',
        test='../test_compat.py::test_upstream_put_leaves_a_truncated_file'),
    Patch(
        target='mmengine.hooks.checkpoint_hook',
        name='CheckpointHook._save_checkpoint_with_step',
        make=compat._make_deferred_removal,
        also_at=(),
        why='removes the oldest kept checkpoint before saving the new one: '
        'with max_keep_ckpts=1 a kill mid-save leaves none.',
        test='../test_compat.py::'
        'test_upstream_checkpoint_hook_removes_before_saving'),
    Patch(
        target='mmengine.runner.checkpoint',
        name='find_latest_checkpoint',
        make=compat._make_find_latest_checkpoint,
        # Runner.load_or_resume, FlexibleRunner; the strategies import it
        # from mmengine.runner when called.
        also_at=('mmengine.runner', 'mmengine.runner.runner',
                 'mmengine.runner._flexible_runner'),
        why='returns whatever last_checkpoint says: empty after a kill '
        'mid-write (resume fails), a missing file, or None when the kill '
        'came between a checkpoint and last_checkpoint (restart from 0).',
        test='../test_compat.py::'
        'test_upstream_find_latest_checkpoint_trusts_last_checkpoint'),
)


# --- installing --------------------------------------------------------------
def _warn(patch: Patch, place: str, problem: str) -> None:
    warnings.warn(
        f'mmdet_psbn: {place} {problem}, so the patch of {patch.label} is '
        f'not applied there and a ps layer reaching it may lose alpha. '
        f'Upstream changed (the patch was written against torch 2.13, '
        f'mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0); please report it.',
        UpstreamPatchWarning,
        stacklevel=2)


def _owner_and_attr(module, name: str):
    """``(owner, attr)`` for a dotted ``name`` inside ``module``."""
    *path, attr = name.split('.')
    owner = module
    for part in path:
        owner = getattr(owner, part, _MISSING)
    return owner, attr


def _current_function(patch: Patch) -> Optional[Callable]:
    """The function ``patch.target`` holds now under ``patch.name`` (a
    classmethod's function), or None if it has none or is not imported."""
    module = sys.modules.get(patch.target)
    owner, attr = _owner_and_attr(module, patch.name)
    held = vars(owner).get(attr) if hasattr(owner, '__dict__') else None
    if isinstance(held, classmethod):
        return held.__func__
    return held if callable(held) else None


def _install(patch: Patch) -> Optional[Callable]:
    """Replace ``patch.target.name`` and rebind its imported ``also_at``
    places.

    Returns the wrapper, or None if the patch was not applied.
    """
    try:
        importlib.import_module(patch.target)
    except ModuleNotFoundError as err:
        if err.name == patch.target.split('.')[0]:
            return None  # the package is not installed: nothing to patch
        _warn(patch, patch.target, f'cannot be imported ({err})')
        return None
    current = _current_function(patch)
    if current is None:
        _warn(patch, patch.label, 'does not exist')
        return None
    if getattr(current, _MARK, False):
        wrapper, original = current, current.__wrapped__
    else:
        original = current
        wrapper = _mark(patch.make(original), original)
        owner, attr = _owner_and_attr(sys.modules[patch.target], patch.name)
        is_method = isinstance(vars(owner)[attr], classmethod)
        setattr(owner, attr, classmethod(wrapper) if is_method else wrapper)
    for place in patch.also_at:
        user = sys.modules.get(place)
        if user is None:
            continue  # binds the wrapper from the target when imported
        held = vars(user).get(patch.name, _MISSING)
        if held is original:
            setattr(user, patch.name, wrapper)
        elif held is _MISSING:
            _warn(patch, place, f'has no {patch.name}')
        elif held is not wrapper:
            _warn(patch, f'{place}.{patch.name}',
                  'is neither the original nor the wrapper')
    return wrapper


def install_upstream_patches() -> None:
    """Install every patch of :data:`PATCHES` (idempotent)."""
    for patch in PATCHES:
        _install(patch)
