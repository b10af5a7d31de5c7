# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Checks of user input that run before anything is built or written, and
:class:`InputError`, the one error type of the tools.

The tools call these before the Runner exists, so a wrong path fails in a
second with a message that names the problem and the fix, and no work
directory is created. Each raises :class:`InputError`.

The rule for every tool under ``tools/``: a user error is an
:class:`InputError`, which :func:`mmdet_psbn.utils.tools.run_tool` prints as
``<prog>: error: <message>`` on stderr before exiting with status 2, the
shape and status of argparse's own usage errors. The documented errors of
the library code a tool calls (a dataset maker's ``ValueError``, a missing
``mlxtend``) are turned into it by the tool
(:func:`mmdet_psbn.utils.tools.user_errors`); the library itself raises its
own types.
"""
import difflib
import os.path as osp
from typing import Iterable, Iterator, Optional, Tuple

__all__ = [
    'DataError', 'InputError', 'check_cfg_options', 'check_config_path',
    'check_data_paths'
]

TOY_HINT = ('make the toy set with `python tools/misc/make_toy_coco.py '
            '{root}`')
COCO_HINT = ('or put COCO 2017 there (annotations/instances_train2017.json, '
             'train2017/, val2017/), see README "Data"')


class InputError(ValueError):
    """A path, file or option given by the user cannot be used."""


class DataError(ValueError):
    """The data a config points at is missing, incomplete or unreadable.

    The base of the datasets' own errors (``psbn_cifar``'s
    ``CIFARDataError``): a dataset raises its subclass with a message that
    names the problem and the fix, wherever it is built, and the tools
    report it as they report :class:`InputError` (exit status 2, no
    traceback), even when it surfaces inside the Runner.
    """


def check_config_path(path: str) -> str:
    """Return ``path``; raise :class:`InputError` if it is not a file."""
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
    inside wrappers (``RepeatDataset.dataset``, ``ConcatDataset.datasets``)."""
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
            check = getattr(_dataset_class(ds, cfg), 'missing_data', None)
            if root and '://' not in root and callable(check):
                message = check(root, bool(ds.get('test_mode', False)))
                if message:
                    yield f'{name}.dataset.data_root', root, root, message
                continue
            if root and not osp.isdir(root):
                yield f'{name}.dataset.data_root', root, root, None
                continue
            ann = ds.get('ann_file') or ''
            if ann:
                path = osp.join(root, ann)
                if not osp.isfile(path):
                    yield f'{name}.dataset.ann_file', path, root or '.', None
    for name in evaluators:
        evals = cfg.get(name)
        for ev in evals if isinstance(evals, (list, tuple)) else [evals]:
            ann = ev.get('ann_file') if isinstance(ev, dict) else None
            if ann and not osp.isfile(ann):
                yield f'{name}.ann_file', ann, osp.dirname(
                    osp.dirname(ann)) or '.', None


def check_data_paths(
    cfg,
    dataloaders: Iterable[str] = ('train_dataloader', 'val_dataloader'),
    evaluators: Iterable[str] = ('val_evaluator', )
) -> None:
    """Raise :class:`InputError` if a data root or annotation file that the
    config names does not exist (local paths only).

    A dataset class may check its own root: a classmethod
    ``missing_data(data_root, test_mode) -> Optional[str]`` returns what is
    missing and where the data goes (``psbn_cifar``'s CIFAR10 has one);
    for the others the root and annotation files must exist, and the
    message gives the COCO / toy COCO hint.
    """
    for where, path, root, message in _missing_data_paths(
            cfg, dataloaders, evaluators):
        if '://' in path:  # a remote backend: its own errors apply
            continue
        fix = (f'Point the config elsewhere with e.g. --cfg-options '
               f'{where.split(".")[0]}.dataset.data_root=/path/to/data/')
        if message is None:
            message = ('does not exist. For the toy data, ' +
                       TOY_HINT.format(root=root) + '; ' + COCO_HINT)
        else:
            message = f'is incomplete: {message}'
        raise InputError(f'{where} = {path!r} {message}. {fix}')


def _dataset_class(ds: dict, cfg) -> Optional[type]:
    """The class ``ds['type']`` names, looked up in the config's scope."""
    cls = ds.get('type')
    if not isinstance(cls, str):
        return cls if isinstance(cls, type) else None
    from mmengine.registry import DATASETS
    scope = cfg.get('default_scope') if hasattr(cfg, 'get') else None
    try:
        with DATASETS.switch_scope_and_registry(scope) as registry:
            return registry.get(cls)
    except Exception:  # an unknown scope or name: the build will say so
        return None
