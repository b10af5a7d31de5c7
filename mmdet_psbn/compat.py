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
"""
import datetime
import pickle
from typing import List

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.logging import HistoryBuffer
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'register_safe_globals',
    'setup_cpu_distributed'
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


register_safe_globals()
