# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Checks of user input that run before anything is built or written.

``tools/train.py`` and ``tools/test.py`` call these before the Runner
exists, so a wrong path fails in a second with a message that names the
problem and the fix, and no work directory is created. Each raises
:class:`InputError`; the tools print its message and exit with status 2.
"""
import difflib
import os.path as osp
from typing import Iterable, Iterator, Optional, Tuple

import torch

TOY_HINT = ('make the toy set with `python tools/misc/make_toy_coco.py '
            '{root}`')
COCO_HINT = ('or put COCO 2017 there (annotations/instances_train2017.json, '
             'train2017/, val2017/), see README "Data"')


class InputError(ValueError):
    """A path, file or option given by the user cannot be used."""


def check_config_path(path: str) -> str:
    if not osp.isfile(path):
        raise InputError(f'config file {path!r} does not exist')
    return path


def check_cfg_options(cfg, options: Optional[dict]) -> None:
    """Refuse ``--cfg-options`` keys that look like typos of existing keys.

    mmengine adds unknown keys silently, so ``model.backbone.dpth=18``
    would build the default depth and fail much later, or not at all. A new
    key with no near namesake among its siblings is accepted: adding keys is
    legitimate (``randomness.seed=0``).
    """
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    for key in options or {}:
        *parents, leaf = key.split('.')
        node = tree
        for part in parents:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit():
                node = node[int(part)]
            else:
                node = None
                break
        if not isinstance(node, dict) or leaf in node:
            continue
        close = difflib.get_close_matches(
            leaf, [str(k) for k in node.keys()], n=1, cutoff=0.75)
        if close:
            where = '.'.join(parents + [close[0]])
            raise InputError(
                f'unknown config key {key!r} in --cfg-options: did you mean '
                f'{where!r}?')


def _dataset_cfgs(dataset) -> Iterator[dict]:
    """Yield the dataset dicts holding ``data_root``/``ann_file``, looking
    inside wrappers (``RepeatDataset.dataset``, ``ConcatDataset.datasets``).
    """
    if isinstance(dataset, dict):
        if 'data_root' in dataset or 'ann_file' in dataset:
            yield dataset
        for key in ('dataset', 'datasets'):
            if key in dataset:
                yield from _dataset_cfgs(dataset[key])
    elif isinstance(dataset, (list, tuple)):
        for d in dataset:
            yield from _dataset_cfgs(d)


def _missing_data_paths(cfg, dataloaders: Iterable[str],
                        evaluators: Iterable[str]) -> Iterator[Tuple]:
    for name in dataloaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for ds in _dataset_cfgs(loader.get('dataset')):
            root = ds.get('data_root') or ''
            if root and not osp.isdir(root):
                yield f'{name}.dataset.data_root', root, root, ds
                continue
            ann = ds.get('ann_file') or ''
            if ann:
                path = osp.join(root, ann)
                if not osp.isfile(path):
                    yield f'{name}.dataset.ann_file', path, root or '.', ds
    for name in evaluators:
        evals = cfg.get(name)
        for ev in evals if isinstance(evals, (list, tuple)) else [evals]:
            ann = ev.get('ann_file') if isinstance(ev, dict) else None
            if ann and not osp.isfile(ann):
                yield f'{name}.ann_file', ann, osp.dirname(
                    osp.dirname(ann)) or '.', None


def check_data_paths(cfg,
                     dataloaders: Iterable[str] = ('train_dataloader',
                                                   'val_dataloader'),
                     evaluators: Iterable[str] = ('val_evaluator', )
                     ) -> None:
    """Raise :class:`InputError` if a data root or annotation file that the
    config names does not exist (local paths only).

    The message says how to get the data: a dataset class may supply that
    with a classmethod ``missing_data_hint(data_root) -> str`` (CIFAR10
    does); otherwise it is the COCO / toy COCO hint.
    """
    for where, path, root, ds in _missing_data_paths(cfg, dataloaders,
                                                     evaluators):
        if '://' in path:  # a remote backend: its own errors apply
            continue
        hint = _dataset_hint(ds, root)
        if hint is None:
            hint = ('For the toy data, ' + TOY_HINT.format(root=root) +
                    '; ' + COCO_HINT)
        raise InputError(
            f'{where} = {path!r} does not exist. {hint}. Point the config '
            'elsewhere with e.g. --cfg-options '
            f'{where.split(".")[0]}.dataset.data_root=/path/to/data/')


def _dataset_hint(ds, root: str) -> Optional[str]:
    if not ds:
        return None
    from mmengine.registry import DATASETS
    cls = ds.get('type')
    if isinstance(cls, str):
        cls = DATASETS.get(cls)  # root registry: our datasets only
    hint = getattr(cls, 'missing_data_hint', None)
    return hint(root) if callable(hint) else None


def check_checkpoint(path: str) -> None:
    """Raise :class:`InputError` unless ``path`` is a checkpoint that
    ``torch.load`` can read with safe loading.

    The tensors are memory-mapped rather than read, so this is cheap even
    for large files; it still catches truncated and corrupt files.
    """
    if not osp.isfile(path):
        raise InputError(f'checkpoint {path!r} does not exist')
    try:
        try:
            torch.load(path, map_location='cpu', weights_only=True, mmap=True)
        except RuntimeError as e:
            if 'mmap' not in str(e):
                raise
            # A legacy (non-zip) file cannot be memory-mapped.
            torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise InputError(
            f'checkpoint {path!r} cannot be read ({type(e).__name__}: '
            f'{first}). It may be truncated or corrupt, e.g. by a run '
            'killed while saving: pass another checkpoint, or delete it '
            '(and the work dir\'s last_checkpoint file if it names it)'
        ) from None
