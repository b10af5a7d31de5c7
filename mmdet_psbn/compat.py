# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Fixes for upstream breakages that block our users, in one place.

Each fix names the versions it was written against, has a test in
``tests/test_compat.py`` that shows the upstream bug itself (so the test
fails, and tells us to delete the fix, once upstream is fixed), and says
what to remove then.

Of these, only fix 1 changes something outside the package on import. The
one list of everything ``import mmdet_psbn`` changes outside it is the
docstring of :mod:`mmdet_psbn.models.layers.upstream` (for users:
``docs/upstream.md``).

1. **Resume with torch >= 2.6** (mmengine <= 0.10.7).
   torch 2.6 made ``torch.load`` default to ``weights_only=True``.
   mmengine's ``load_from_local`` calls ``torch.load(filename,
   map_location)``, and its checkpoints pickle the ``MessageHub`` state:
   :class:`~mmengine.logging.HistoryBuffer` objects holding numpy arrays. So
   ``--resume`` raises ``UnpicklingError: Weights only load failed``.
   We do *not* switch safe loading off. :func:`register_safe_globals`
   allow-lists exactly the classes and functions such checkpoints contain
   (:data:`MMENGINE_CHECKPOINT_GLOBALS`), with
   :func:`torch.serialization.add_safe_globals`; every other global still
   makes ``torch.load`` refuse. The one builtin they need, ``getattr``, is
   replaced by a stand-in that only resolves HistoryBuffer's methods.
   Applied on ``import mmdet_psbn``.
   Remove when mmengine allow-lists them itself.

2. **Multi-process training without CUDA** (mmengine <= 0.10.7).
   ``mmengine.dist.init_dist('pytorch')`` calls ``torch.cuda.set_device``
   before ``init_process_group``, and ``Runner.wrap_model`` passes
   ``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel``, which a CPU
   module rejects. :func:`setup_cpu_distributed` (called by
   ``tools/train.py`` and ``tools/test.py``) does, *only when CUDA is not
   available*: initialise the process group with gloo (the Runner then skips
   its own ``init_dist``) and set ``device_ids=None`` in
   ``model_wrapper_cfg``. With CUDA nothing changes: nccl, one device per
   process, as upstream. Remove when ``init_dist`` supports CPU.

3. **Checkpoints a kill cannot break** (mmengine <= 0.10.7). A training
   process killed (SIGKILL, OOM killer, node failure) while mmengine's
   ``CheckpointHook`` saves can lose the run for ``--resume``:

   a. ``LocalBackend.put`` writes a checkpoint in place, so a kill leaves
      a truncated ``iter_<k>.pth`` under its final name.
   b. ``CheckpointHook._save_checkpoint_with_step`` removes the oldest
      kept checkpoint *before* writing the new one and ``last_checkpoint``:
      with ``max_keep_ckpts=1`` a kill during the save leaves
      ``last_checkpoint`` naming a deleted file and no complete checkpoint.
   c. ``last_checkpoint`` is written with ``open(path, 'w')``: a kill
      between truncation and write leaves it empty, and ``--resume`` then
      fails (``Runner.resume('')``); one between the checkpoint and this
      file restarts the run from scratch.

   The wrappers of :data:`mmdet_psbn.models.layers.upstream.PATCHES` (one
   row for each of these functions) make (a) write a temporary file beside
   the target and ``os.replace`` it (a checkpoint is complete or absent; a
   kill leaves a hidden ``.<name>.<random>.tmp``), (b) defer the removals
   until the new checkpoint and ``last_checkpoint`` are written, and
   ``find_latest_checkpoint`` (which ``--resume`` calls) fall back, when
   ``last_checkpoint`` is missing, empty or names no complete checkpoint
   (:func:`is_complete_checkpoint`), to the newest complete
   ``epoch_<n>.pth`` / ``iter_<n>.pth`` in that folder (the work dir),
   with a warning. Applied on import. Remove each when its
   ``test_upstream_*`` test in ``tests/test_compat.py`` fails.

4. **Mixed precision on the CPU** (mmengine <= 0.10.7).
   ``AmpOptimWrapper.__init__`` asserts that CUDA, an NPU, an MLU or a
   MUSA device is available, so ``--amp`` cannot be built on a machine
   without one, although mmengine's own ``autocast`` supports CPU bf16
   and the wrapper needs nothing else there. :class:`CPUAmpOptimWrapper`
   is ``AmpOptimWrapper`` whose constructor, on the CPU only, runs with
   that assertion passed (the module's ``is_cuda_available`` answers True
   for the call, then is restored), with ``dtype`` bf16 and a disabled
   ``GradScaler`` (bf16 needs no loss scaling); autocast, backward, step
   and state dict are mmengine's. :func:`use_cpu_amp` (called by
   ``tools/train.py --amp`` without CUDA) registers it in the root
   ``OPTIM_WRAPPERS`` and puts it in the config; nothing is registered on
   import. Remove when ``AmpOptimWrapper`` builds on the CPU
   (``test_upstream_amp_optim_wrapper_needs_an_accelerator`` fails): then
   ``--amp`` sets ``AmpOptimWrapper`` with ``dtype='bfloat16'`` and
   ``loss_scale=dict(enabled=False)`` there.
"""
import contextlib
import datetime
import logging
import os
import os.path as osp
import pickle
import re
import sys
import zipfile
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.device import get_device
from mmengine.logging import HistoryBuffer
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'register_safe_globals',
    'setup_cpu_distributed', 'is_complete_checkpoint', 'CPU_AMP_OPTIM_WRAPPER',
    'CPUAmpOptimWrapper', 'use_cpu_amp'
]


def _numpy_globals() -> List:
    """What pickled numpy arrays and scalars refer to.

    Taken from numpy's own ``__reduce__`` so that the names are right for
    numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) alike.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    # A dtype unpickles as np.dtype(...) then BUILD on its class, e.g.
    # numpy.dtypes.Float64DType: the classes of the dtypes logs can hold.
    dtype_classes = {
        type(np.dtype(t))
        for t in ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8',
                  'float16', 'float32', 'float64')
    }
    return [
        reconstruct,
        scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
        # An empty array's data pickles as bytes() (an empty HistoryBuffer).
        bytes
    ]


def _history_buffer_getattr(obj, name: str):
    """``getattr`` as mmengine checkpoints use it, and nothing more.

    ``HistoryBuffer.__getstate__`` stores its statistics methods, which
    pickle as ``getattr(HistoryBuffer, 'mean')``. Allow-listing the builtin
    ``getattr`` would let a checkpoint reach any attribute of any allowed
    object, so this stand-in is registered under its name instead and only
    resolves public methods of :class:`HistoryBuffer`.
    """
    if (obj is HistoryBuffer and isinstance(name, str)
            and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint: '
        'mmdet_psbn only allows public methods of HistoryBuffer')


#: The globals an mmengine checkpoint refers to beyond torch's defaults.
MMENGINE_CHECKPOINT_GLOBALS: List = [
    HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
    *_numpy_globals()
]


def register_safe_globals() -> None:
    """Allow-list :data:`MMENGINE_CHECKPOINT_GLOBALS` for safe loading."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


def setup_cpu_distributed(cfg, launcher: str) -> bool:
    """Make a ``--launcher pytorch`` run work on a machine without CUDA.

    Args:
        cfg (mmengine.Config): The run's config; ``env_cfg.dist_cfg`` and
            ``model_wrapper_cfg`` are updated in place.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Returns:
        bool: True if the CPU path was taken, False if nothing was changed
        (not distributed, or CUDA is available).

    Note:
        It must run before the Runner is built: the Runner's ``setup_env``
        only calls ``init_dist`` when no process group exists yet.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs CUDA here; on a machine without '
            'CUDA use torchrun (tools/dist_train.sh CONFIG N), i.e. '
            '--launcher pytorch')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)

    from mmengine.registry import MODEL_WRAPPERS
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
    wrapper_type = wrapper_cfg['type']
    if isinstance(wrapper_type, str):
        wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
    if isinstance(wrapper_type, type) and issubclass(wrapper_type,
                                                     DistributedDataParallel):
        wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    return True


# --- fix 3: checkpoints a kill cannot break ---------------------------------
#: The names mmengine's ``CheckpointHook`` gives by default.
_CHECKPOINT_NAME = re.compile(r'(epoch|iter)_(\d+)\.pth')


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole ``torch.save`` file, cheaply.

    ``torch.save`` writes a zip archive whose directory comes last, so a
    file cut short by a kill has none: this reads the end of the file, not
    the tensors. (Whether the contents make sense is for the loader.)
    """
    return osp.isfile(path) and zipfile.is_zipfile(path)


def _make_atomic_put(original: Callable) -> Callable:

    def put(self, obj: bytes, filepath) -> None:
        """``LocalBackend.put`` through a temporary file and ``os.replace``
        (compat fix 3a): ``filepath`` is the old file or the whole new one."""
        # Lazily: mmdet_psbn.utils is not part of the core's import.
        from mmdet_psbn.utils.io import atomic_write
        with atomic_write(str(filepath), 'wb') as f:
            f.write(obj)

    return put


def _make_deferred_removal(original: Callable) -> Callable:

    def _save_checkpoint_with_step(self, runner, step, meta):
        """``CheckpointHook._save_checkpoint_with_step`` removing outdated
        checkpoints only after the new one and ``last_checkpoint`` are written
        (compat fix 3b)."""
        backend = self.file_backend
        outdated: List[str] = []
        backend.remove = outdated.append  # shadows the method meanwhile
        try:
            original(self, runner, step, meta)
        finally:
            del backend.remove
        for path in outdated:
            if path != self.last_ckpt and backend.isfile(path):
                backend.remove(path)

    return _save_checkpoint_with_step


def _newest_complete_checkpoint(folder: str) -> Optional[str]:
    """The most recently written complete ``epoch_<n>.pth`` / ``iter_<n>.pth``
    in ``folder``, or None."""
    if not osp.isdir(folder):
        return None
    found = [
        osp.join(folder, name) for name in os.listdir(folder)
        if _CHECKPOINT_NAME.fullmatch(name)
    ]
    found = [p for p in found if is_complete_checkpoint(p)]
    return max(found, key=osp.getmtime) if found else None


def _make_find_latest_checkpoint(original: Callable) -> Callable:

    def find_latest_checkpoint(path: str) -> Optional[str]:
        """``find_latest_checkpoint`` that never returns a missing, empty or
        truncated checkpoint while a complete one is there (compat fix 3c)."""
        recorded = original(path)
        if recorded and is_complete_checkpoint(recorded):
            return recorded
        folder = osp.dirname(recorded) if recorded else path
        newest = _newest_complete_checkpoint(folder)
        if newest is None and folder != path:
            newest = _newest_complete_checkpoint(path)
        if newest is None:
            return recorded
        if recorded is None:
            said = 'is missing'
        elif not recorded:
            said = 'is empty'
        else:
            said = f'names {recorded}, which is not a complete checkpoint'
        from mmengine.logging import print_log
        print_log(
            f'{osp.join(path, "last_checkpoint")} {said} (a run killed '
            f'while saving?); resuming from the newest complete checkpoint, '
            f'{newest}',
            logger='current',
            level=logging.WARNING)
        return newest

    return find_latest_checkpoint


register_safe_globals()

#: The name :func:`use_cpu_amp` registers :class:`CPUAmpOptimWrapper` under
#: (fix 4).
CPU_AMP_OPTIM_WRAPPER = 'CPUAmpOptimWrapper'


@contextlib.contextmanager
def _cpu_passes_amp_device_check():
    """Within the block, ``AmpOptimWrapper.__init__``'s device assertion (its
    only use of ``is_cuda_available``) passes on the CPU.

    Swaps the name in mmengine's ``amp_optimizer_wrapper`` module for the
    duration of one constructor call, then restores it.
    """
    module = sys.modules[AmpOptimWrapper.__module__]
    original = getattr(module, 'is_cuda_available', None)
    if original is None:
        raise RuntimeError(
            f'{module.__name__} has no is_cuda_available any more: mmengine '
            'changed its device check; update or remove fix 4 of '
            'mmdet_psbn.compat (CPUAmpOptimWrapper)')
    module.is_cuda_available = lambda: True
    try:
        yield
    finally:
        module.is_cuda_available = original


class CPUAmpOptimWrapper(AmpOptimWrapper):
    """Mmengine's ``AmpOptimWrapper``, also where training runs on the CPU:
    bf16 autocast without loss scaling (fix 4 of :mod:`mmdet_psbn.compat`).

    Where mmengine's device (``mmengine.device.get_device()``) is not the
    CPU, this is ``AmpOptimWrapper`` itself: same arguments, same checks,
    ``loss_scale`` defaulting to ``'dynamic'``. On the CPU, mmengine's
    constructor runs whole with its device assertion passed, and:

    - ``dtype`` is bf16, the one dtype of CPU autocast (``None`` means bf16;
      anything else raises ``ValueError``);
    - ``loss_scale`` must be left out: bf16 has fp32's exponent range, so
      gradients do not underflow and need no scaling. The scaler is a
      disabled ``GradScaler`` (``enabled=False``): its ``scale``,
      ``unscale_``, ``step`` and ``update`` pass through, and its state
      dict is empty.

    Everything else is mmengine's: ``optim_context`` (autocast through
    ``mmengine.runner.amp.autocast``), ``backward``, ``step``, gradient
    clipping and the state dict. Parameters, gradients and optimizer state
    stay fp32; autocast computes the ops it lists (convolutions, matrix
    products) in bf16.

    Args:
        loss_scale (float or str or dict, optional): ``AmpOptimWrapper``'s,
            off the CPU only. Defaults to None (``'dynamic'`` off the CPU).
        dtype (str or torch.dtype, optional): The autocast dtype. Defaults to
            None (bf16 on the CPU, mmengine's default elsewhere).
        **kwargs: ``AmpOptimWrapper``'s (``optimizer``, ``clip_grad``...).

    Note:
        Not registered on ``import mmdet_psbn``: :func:`use_cpu_amp` (what
        ``tools/train.py --amp`` calls without CUDA) registers it as
        ``'CPUAmpOptimWrapper'`` in mmengine's root ``OPTIM_WRAPPERS``.
    """

    def __init__(self, loss_scale=None, dtype=None, **kwargs) -> None:
        if get_device() != 'cpu':
            super().__init__(
                loss_scale='dynamic' if loss_scale is None else loss_scale,
                dtype=dtype,
                **kwargs)
            return
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError('mixed precision on the CPU is bf16 only (CPU '
                             f'autocast has no other dtype), got dtype='
                             f'{dtype!r}')
        if loss_scale is not None:
            raise ValueError(
                f'bf16 on the CPU needs no loss scaling, got loss_scale='
                f'{loss_scale!r}: leave loss_scale out of optim_wrapper')
        with _cpu_passes_amp_device_check():
            super().__init__(
                loss_scale=dict(enabled=False), dtype=torch.bfloat16, **kwargs)


def use_cpu_amp(cfg) -> None:
    """Make ``cfg`` train with bf16 mixed precision on the CPU (fix 4).

    Registers :class:`CPUAmpOptimWrapper` in mmengine's root
    ``OPTIM_WRAPPERS`` (once) and makes ``cfg.optim_wrapper`` one, with
    ``dtype='bfloat16'`` and no ``loss_scale``; the optimizer and the other
    settings are kept.

    Args:
        cfg (mmengine.Config): The run's config, updated in place.

    Raises:
        RuntimeError: if mmengine's device is not the CPU (``--amp`` with
            CUDA is mmengine's ``AmpOptimWrapper``, fp16).
        KeyError: if another class is registered under the name already.
    """
    device = get_device()
    if device != 'cpu':
        raise RuntimeError(f'use_cpu_amp is for training on the CPU; '
                           f"mmengine's device here is {device!r}")
    if OPTIM_WRAPPERS.get(CPU_AMP_OPTIM_WRAPPER) is not CPUAmpOptimWrapper:
        OPTIM_WRAPPERS.register_module(
            CPU_AMP_OPTIM_WRAPPER, module=CPUAmpOptimWrapper)
    cfg.optim_wrapper.type = CPU_AMP_OPTIM_WRAPPER
    cfg.optim_wrapper.dtype = 'bfloat16'
    cfg.optim_wrapper.pop('loss_scale', None)
