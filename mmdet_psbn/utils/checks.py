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
import errno
import json
import os
import os.path as osp
from typing import Iterable, Iterator, Optional, Tuple

__all__ = [
    'DataError', 'InputError', 'check_annotation_file', 'check_cfg_options',
    'check_config_keys', 'check_config_path', 'check_data_paths',
    'check_out_dir', 'describe_missing'
]

#: The first bytes of the image formats OpenCV and Pillow read (JPEG, PNG,
#: GIF, BMP, TIFF both ways, WebP's RIFF container).
IMAGE_MAGICS = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'GIF8', b'BM',
                b'II*\x00', b'MM\x00*', b'RIFF')

#: The top-level keys of a config that mmengine's Runner reads (its
#: ``from_cfg``), and those of mmengine's own config machinery: a new
#: top-level key close to one of these is a typo.
RUNNER_KEYS = ('model', 'work_dir', 'train_dataloader', 'val_dataloader',
               'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg',
               'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
               'val_evaluator', 'test_evaluator', 'default_hooks',
               'custom_hooks', 'data_preprocessor', 'load_from', 'resume',
               'launcher', 'env_cfg', 'log_processor', 'log_level',
               'visualizer', 'default_scope', 'randomness', 'experiment_name',
               'custom_imports', 'runner_type', 'vis_backends')

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


def describe_missing(path: str) -> str:
    """Why ``path`` is not a readable regular file, in a few words (``'does not
    exist'``, ``'is a directory'``...), or ``''`` if it is one."""
    if osp.isfile(path):
        return '' if os.access(path, os.R_OK) else 'is not readable'
    if osp.islink(path) and not osp.exists(path):
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return 'is a symbolic link loop'
        return 'is a broken symbolic link'
    if osp.isdir(path):
        return 'is a directory, not a file'
    if osp.exists(path):
        return 'is not a regular file'
    return 'does not exist'


def check_out_dir(path: str, option: str = '--work-dir') -> str:
    """Return ``path``; raise :class:`InputError` if it (or a folder above it)
    exists and is not a folder, so the tool could not write there."""
    if '://' in path:
        return path
    parent = osp.abspath(path)
    while not osp.lexists(parent) and osp.dirname(parent) != parent:
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise InputError(f'{option} {path!r} cannot be a folder: {parent!r} '
                         'is a file; give another folder')
    return path


def check_config_path(path: str) -> str:
    """Return ``path``; raise :class:`InputError` if it is not a file."""
    problem = describe_missing(path)
    if problem:
        raise InputError(f'config file {path!r} {problem}: give the path '
                         'of a config file (e.g. configs/retinanet_r50_'
                         'psbn.py)')
    return path


def check_config_keys(cfg, path: str = 'the config') -> None:
    """Refuse a top-level config key that looks like a typo of one the Runner
    reads (``optim_wraper`` for ``optim_wrapper``).

    mmengine ignores unknown top-level keys, so the typo would silently
    train with the base's settings. Other new keys (variables such as
    ``data_root``) are accepted.
    """
    for key in cfg.keys() if hasattr(cfg, 'keys') else ():
        if key in RUNNER_KEYS or key.startswith('_'):
            continue
        close = [
            k for k in difflib.get_close_matches(
                key, RUNNER_KEYS, n=1, cutoff=0.85)
            if abs(len(k) - len(key)) <= 2  # not val_evaluator_abs
        ]
        if close:
            raise InputError(
                f'unknown config key {key!r} in {path}: did you mean '
                f'{close[0]!r}? (mmengine would ignore it)')


def check_cfg_options(cfg, options: Optional[dict]) -> None:
    """Refuse ``--cfg-options`` keys that look like typos of existing keys.

    mmengine adds unknown keys silently, so ``model.backbone.dpth=18``
    would build the default depth and fail much later, or not at all. The
    first part of a key that does not exist is compared with its siblings
    (at the top level also with :data:`RUNNER_KEYS`, so
    ``optim_wraper.optimizer.lr`` is caught); a new key with no near
    namesake is accepted: adding keys is legitimate (``randomness.seed=0``).
    """
    tree = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    for key in options or {}:
        parts = key.split('.')
        node = tree
        for depth, part in enumerate(parts):
            if isinstance(node, (list, tuple)) and part.isdigit() \
                    and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                break
            if part in node:
                node = node[part]
                continue
            if depth == 0 and part in RUNNER_KEYS:
                break  # a new top-level key the Runner reads
            # The first part that does not exist: a typo of a sibling?
            siblings = [str(k) for k in node.keys()]
            if depth == 0:
                siblings += [k for k in RUNNER_KEYS if k not in node]
            close = difflib.get_close_matches(part, siblings, n=1, cutoff=0.75)
            if close:
                where = '.'.join(parts[:depth] + [close[0]])
                raise InputError(
                    f'unknown config key {key!r} in --cfg-options: did you '
                    f'mean {where!r}?')
            break


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
    for name in dataloaders:
        loader = cfg.get(name)
        for ds in _dataset_cfgs(loader.get('dataset') if loader else None):
            root, ann = ds.get('data_root') or '', ds.get('ann_file') or ''
            path = osp.join(root, ann)
            if not ann.endswith('.json') or '://' in path:
                continue
            cls = _dataset_class(ds, cfg)
            prefix = ds.get('data_prefix') or {}
            img = prefix.get('img') if isinstance(prefix, dict) else None
            coco = _is_coco_dataset(cls)
            check_annotation_file(
                path,
                osp.join(root, img) if coco and img is not None else None,
                images=coco,
                where=f'{name}.dataset.ann_file')


def _is_coco_dataset(cls) -> bool:
    try:
        from mmdet.datasets import CocoDataset
    except ImportError:  # mmdet is not installed: not a COCO dataset
        return False
    return isinstance(cls, type) and issubclass(cls, CocoDataset)


def image_problem(path: str) -> str:
    """Why ``path`` cannot be an image file, or ``''``: what
    :func:`describe_missing` says, ``'is empty'`` or ``'is not an image'`` (no
    known header in its first 8 bytes, the only ones read)."""
    problem = describe_missing(path)
    if problem:
        return problem
    with open(path, 'rb') as f:
        head = f.read(8)
    if not head:
        return 'is empty'
    if not head.startswith(IMAGE_MAGICS):
        return 'is not an image (no JPEG, PNG, GIF, BMP, TIFF or WebP header)'
    return ''


def check_annotation_file(path: str,
                          img_dir: Optional[str] = None,
                          images: bool = True,
                          where: str = 'ann_file') -> None:
    """Raise :class:`InputError` unless ``path`` is a JSON file (a COCO one if
    ``images``: a dict with an ``images`` list whose entries have a
    ``file_name``) and, given ``img_dir``, every image it lists is there with
    an image header.

    The file is parsed once (COCO 2017 train, 448 MB, as mmdet's own loading
    does) and each image is opened for its first 8 bytes; see docs/errors.md
    for the cost.
    """
    fix = ('Replace it with the annotation file of the dataset (for the toy '
           'set: ' +
           TOY_HINT.format(root=osp.dirname(osp.dirname(path)) or '.') +
           ' --force)')
    try:
        with open(path, 'rb') as f:
            data = json.load(f)
    except UnicodeDecodeError:
        raise InputError(f'{where} = {path!r} is not a JSON file (not '
                         f'UTF-8 text). {fix}') from None
    except ValueError as e:
        raise InputError(f'{where} = {path!r} is not valid JSON '
                         f'({getattr(e, "msg", e)} at line '
                         f'{getattr(e, "lineno", "?")}, column '
                         f'{getattr(e, "colno", "?")}). {fix}') from None
    if not images:
        return
    entries = data.get('images') if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get('file_name'), str)
            for e in entries):
        what = (f'a JSON {type(data).__name__}' if not isinstance(data, dict)
                else 'no "images" list with a "file_name" in each entry')
        raise InputError(f'{where} = {path!r} is not a COCO annotation file '
                         f'({what}). {fix}')
    if img_dir is None or '://' in img_dir:
        return
    bad = [(e['file_name'], problem) for e in entries
           if (problem := image_problem(osp.join(img_dir, e['file_name'])))]
    if bad:
        name, problem = bad[0]
        raise InputError(
            f'{where} = {path!r} lists images that cannot be read: '
            f'{osp.join(img_dir, name)!r} {problem} ({len(bad)} of '
            f'{len(entries)} images). Put the images in {img_dir!r} (the '
            f'config\'s data_root + data_prefix.img) or fix the annotation '
            f'file')


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
