# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Files in and out, one way each.

- :func:`load_checkpoint` (and :func:`check_checkpoint`): the one safe
  checkpoint loader, with the one message for a file it cannot read;
- :func:`atomic_write` and :func:`atomic_dir`: a file or a folder written
  beside its destination and moved into place with one ``os.replace``, so
  an interrupted run never leaves a half-written one;
- :func:`dump_json` and :func:`json_default`: the JSON reports.

Light on purpose (os, json, numpy, torch): the core may use it, but does
so lazily, so that ``import mmdet_psbn`` does not load
:mod:`mmdet_psbn.utils`.
"""
import json
import math
import os
import os.path as osp
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from .checks import InputError, describe_missing

__all__ = [
    'atomic_dir', 'atomic_write', 'check_checkpoint', 'check_state_dict',
    'dump_json', 'json_default', 'load_checkpoint'
]


def _load_failure(path: str, err: Exception) -> InputError:
    """The one message for a checkpoint that safe loading refuses: what
    torch said (its useful line) and the fix."""
    text = str(err).strip()
    # torch's weights-only message: the useful line follows this marker.
    detail = text.split('WeightsUnpickler error:', 1)[-1].strip()
    line = (detail.splitlines() or [''])[0]
    reason = line.split('. ')[0].rstrip('.') or 'no detail'
    with open(path, 'rb') as f:
        head = f.read(8)
    if not head:
        reason = 'the file is empty'
    if head[:1] == b'\x80' and head[2:3] == b'\x95':  # pickle >= 4's FRAME
        fix = ('It is a plain Python pickle, not a file torch.save wrote, '
               'and safe loading never runs the code a pickle may hold: '
               'save the weights with torch.save(model.state_dict(), path)')
    elif reason.startswith('Unsupported global'):
        fix = ('It holds pickled objects other than tensors and mmengine\'s '
               'resume state, which safe loading never runs; if you trust '
               'the file, load it once with torch.load(weights_only=False) '
               'and save what you need of it (e.g. its state_dict)')
    else:
        fix = ('It may be truncated or corrupt, e.g. by a run killed while '
               'saving: pass another checkpoint, or delete it (and the work '
               'dir\'s last_checkpoint file if it names it)')
    return InputError(f'checkpoint {path!r} cannot be read safely '
                      f'(torch.load with weights_only=True: '
                      f'{type(err).__name__}: {reason}). {fix}')


def load_checkpoint(path: str, mmap: bool = False) -> Any:
    """Read a checkpoint file with safe loading, on the CPU.

    ``torch.load(path, map_location='cpu', weights_only=True)``: no code
    in the file runs. Beyond torch's defaults, the allow-list holds exactly
    what mmengine's resume state needs
    (:data:`mmdet_psbn.compat.MMENGINE_CHECKPOINT_GLOBALS`, registered on
    ``import mmdet_psbn``).

    Args:
        path (str): The checkpoint file.
        mmap (bool): Memory-map the tensors instead of reading them (cheap
            even for a large file; a legacy, non-zip file is read).
            Defaults to False.

    Returns:
        The loaded object (an mmengine checkpoint dict, a state dict...).

    Raises:
        InputError: the file does not exist, or cannot be read safely (the
            message says why and what to do).
    """
    problem = describe_missing(path)
    if problem:
        raise InputError(f'checkpoint {path!r} {problem}: give the path of '
                         'a checkpoint file (.pth)')
    try:
        if mmap:
            try:
                return torch.load(
                    path, map_location='cpu', weights_only=True, mmap=True)
            except RuntimeError as e:
                if 'mmap' not in str(e):
                    raise
                # A legacy (non-zip) file cannot be memory-mapped.
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise _load_failure(path, e) from None


def check_checkpoint(path: str) -> None:
    """Raise :class:`InputError` unless :func:`load_checkpoint` can read
    ``path``; the tensors are memory-mapped, not read, so this is cheap but
    still catches truncated and corrupt files."""
    load_checkpoint(path, mmap=True)


def check_state_dict(path: str, model=None, match_shapes: bool = True) -> None:
    """Raise :class:`InputError` unless the checkpoint ``path`` holds a state
    dict of tensors fit to load into ``model``.

    Read with :func:`load_checkpoint` (tensors memory-mapped). Refused: a
    file that is not a dict, a dict with no state dict in it (mmengine's
    ``{'state_dict': ...}`` or a bare one), a floating-point tensor of the
    model given as an integer, bool or complex one, and NaN or inf in a
    floating-point tensor (a diverged run). With ``model``, the state dict
    must share a key with it and, with ``match_shapes`` (testing,
    resuming), hold every parameter of the model with the model's shape (a
    finetune's ``load_from`` may differ in the head).
    """
    ckpt = load_checkpoint(path, mmap=True)
    fix = 'pass the checkpoint this config trained (e.g. its work dir\'s ' \
        'latest .pth)'
    if not isinstance(ckpt, dict):
        raise InputError(f'checkpoint {path!r} holds a '
                         f'{type(ckpt).__name__}, not a state dict: {fix}')
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict) or not any(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f'checkpoint {path!r} holds no state dict of '
                         f'tensors (keys: {sorted(map(str, ckpt))[:5]}): '
                         f'{fix}')
    state = {
        (k[len('module.'):] if str(k).startswith('module.') else k): v
        for k, v in state.items()
    }
    own = model.state_dict() if model is not None else {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        mine = own.get(key)
        if (mine is not None and mine.is_floating_point()
                and not value.is_floating_point()):
            raise InputError(
                f'checkpoint {path!r}: {key!r} is {value.dtype}, the model\'s '
                f'is {mine.dtype}: {fix}')
        if value.is_floating_point() or value.is_complex():
            if not bool(torch.isfinite(value).all()):
                raise InputError(
                    f'checkpoint {path!r}: {key!r} holds NaN or inf (a '
                    f'diverged run?): use a checkpoint from before the '
                    f'divergence (tools/analyze_collapse.py reports '
                    f'which layers diverged)')
        if match_shapes and mine is not None and mine.shape != value.shape:
            raise InputError(
                f'checkpoint {path!r}: {key!r} has shape '
                f'{tuple(value.shape)}, the model\'s is {tuple(mine.shape)} '
                f'(a checkpoint of another model?): {fix}')
    if own and not set(state) & set(own):
        raise InputError(
            f'checkpoint {path!r} shares no key with the model (it has '
            f'{sorted(state)[:3]}..., the model {sorted(own)[:3]}...): '
            f'{fix}')
    if match_shapes and model is not None:
        params = [name for name, _ in model.named_parameters()]
        missing = [name for name in params if name not in state]
        if missing:
            raise InputError(
                f'checkpoint {path!r} lacks {len(missing)} of the model\'s '
                f'{len(params)} parameters (first: {missing[0]!r}), which '
                f'would keep their random initial values: {fix}')


@contextmanager
def atomic_write(path: str, mode: str = 'w') -> Iterator[Any]:
    """Open a temporary file beside ``path``; replace ``path`` with it when the
    block ends.

    The data is flushed and fsync'ed before the one ``os.replace``, so
    ``path`` is either the old file or the whole new one. On any error
    (``KeyboardInterrupt`` too) the temporary file is removed and ``path``
    is left as it was. Missing parent folders are created.

    Args:
        path (str): The file to write.
        mode (str): ``'w'`` (text) or ``'wb'`` (e.g. for ``torch.save``).
            Defaults to ``'w'``.

    Yields:
        The open temporary file.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Not mkstemp: its files are private (0600); this one gets the mode a
    # plain open() would give (0666 less the umask), like what it replaces.
    tmp = osp.join(
        folder, f'.{osp.basename(path)}.{os.getpid()}.'
        f'{secrets.token_hex(4)}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """A temporary folder beside ``path`` that replaces ``path`` (removed first
    if it exists) when the block ends.

    On any error (``KeyboardInterrupt`` too) the temporary folder is
    removed and ``path`` is left as it was. Missing parent folders are
    created.

    Yields:
        str: The temporary folder (it exists, empty), to fill.
    """
    path = osp.abspath(path)
    parent = osp.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}-', dir=parent)
    try:
        yield tmp
        if osp.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_default(obj: Any) -> Any:
    """``json.dump``'s ``default`` for what our reports hold.

    Tensors and numpy arrays become lists, numpy scalars Python numbers
    (``None`` where not finite), anything else its ``str``.
    """
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, np.generic):
        obj = obj.item()
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        return obj
    return str(obj)


def dump_json(obj: Any, path: str) -> str:
    """Write ``obj`` to ``path`` as indented JSON, atomically
    (:func:`atomic_write`, :func:`json_default`).

    Returns ``path``.
    """
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1, default=json_default)
    return path
