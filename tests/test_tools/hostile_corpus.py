# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The generated corpus of hostile inputs (issue 14, item 6).

Each :class:`ToolCase` is one command line of one tool whose input is bad in
one way; :func:`ToolCase.make` writes what it needs into a fresh folder and
returns the arguments and the fragments the one-line message must contain
(the problem, e.g. a path or a key, and a hint of the fix). Each
:class:`CtorCase` is one constructor call (a ps layer, a hook) with one bad
argument. ``test_hostile_inputs.py`` runs them all; :data:`TOOL_CASES` and
:data:`CTOR_CASES` are built at import, so their count is known
(:data:`NUM_CASES`, quoted in docs/errors.md).

The assets a case may read (:class:`Assets`: a toy COCO root, a toy CIFAR
root, valid checkpoints, configs) are made once per session; a case that
needs one broken copies it first, so no case can damage another's input.
"""
import json
import math
import os
import os.path as osp
import pickle
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: A marker a hostile pickle would create if its code ran.
MARKER = 'PWNED'


# --------------------------------------------------------------- the assets
@dataclass
class Assets:
    """What the cases read; made once (:func:`make_assets`)."""
    root: str
    coco: str  # toy COCO root, ends with '/'
    cifar: str  # toy CIFAR root (holds cifar-10-batches-py)
    coco_cfg: str  # toy RetinaNet config reading ``coco``
    cifar_cfg: str  # CIFAR ResNet-20 config reading ``cifar``
    ckpt: str  # a valid zip checkpoint of a small psBN state dict
    legacy_ckpt: str  # the same in torch's legacy (non-zip) format
    cifar_ckpt: str  # a valid checkpoint of ``cifar_cfg``'s model
    extra: Dict[str, str] = field(default_factory=dict)


def _small_psbn_state() -> dict:
    from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), PostShiftedBatchNorm2d(8),
        torch.nn.Conv2d(8, 8, 3), PostShiftedBatchNorm2d(8))
    return dict(meta=dict(epoch=1), state_dict=model.state_dict())


def make_assets(root: str, coco: str) -> Assets:
    """Write the shared inputs under ``root`` (``coco``: a toy COCO root)."""
    from psbn_cifar.datasets.cifar import make_toy_cifar
    from ..conftest import write_toy_config
    os.makedirs(root, exist_ok=True)
    cifar = make_toy_cifar(
        osp.join(root, 'cifar'), num_train=20, num_test=10, seed=0)
    coco_cfg = write_toy_config(osp.join(root, 'coco_cfg.py'), coco)
    cifar_cfg = osp.join(root, 'cifar_cfg.py')
    base = osp.join(REPO, 'projects', 'psbn_cifar', 'configs',
                    'resnet20_psbn_restart9x100.py')
    with open(cifar_cfg, 'w') as f:
        f.write(f'_base_ = {base!r}\n'
                f'train_dataloader = dict(batch_size=4, num_workers=0, '
                f'persistent_workers=False, dataset=dict(data_root='
                f'{cifar!r}))\n'
                f'val_dataloader = dict(batch_size=4, num_workers=0, '
                f'persistent_workers=False, dataset=dict(data_root='
                f'{cifar!r}))\n'
                'test_dataloader = val_dataloader\n')
    ckpt = osp.join(root, 'psbn.pth')
    torch.save(_small_psbn_state(), ckpt)
    legacy = osp.join(root, 'psbn_legacy.pth')
    torch.save(
        _small_psbn_state(), legacy, _use_new_zipfile_serialization=False)
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(cifar_cfg)
    with DefaultScope.overwrite_default_scope('psbn_cifar'):
        model = MODELS.build(cfg.model)
    cifar_ckpt = osp.join(root, 'cifar.pth')
    torch.save(dict(meta={}, state_dict=model.state_dict()), cifar_ckpt)
    return Assets(root, coco, cifar, coco_cfg, cifar_cfg, ckpt, legacy,
                  cifar_ckpt)


# ----------------------------------------------------------------- the cases
@dataclass
class ToolCase:
    """One tool run with one hostile input.

    ``make(assets, tmp)`` writes the case's own files under ``tmp`` and
    returns ``(argv, fragments)``; the tool is then run with ``argv`` (and,
    for the config tools, ``--work-dir <tmp>/work/run``).
    """
    id: str
    tool: str  # 'train', 'psbn2bn', 'misc/make_toy_coco'...
    make: Callable[[Assets, str], Tuple[List[str], List[str]]]
    work_dir: bool = False  # give it --work-dir <tmp>/work/run

    @property
    def prog(self) -> str:
        return osp.basename(self.tool) + '.py'


@dataclass
class CtorCase:
    """One constructor call with one bad argument: ``call()`` must raise
    ``error`` with every ``fragments`` in its message."""
    id: str
    call: Callable[[], Any]
    error: type
    fragments: List[str]


def _write(path: str, data: bytes) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def _random_bytes(n: int, seed: int) -> bytes:
    return np.random.RandomState(seed).randint(
        0, 256, n, dtype=np.uint8).tobytes()


class _Evil:
    """Pickles to a call of ``func(*args)``: what a hostile file runs."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_payloads(marker: str) -> Dict[str, object]:
    """Objects whose unpickling would create ``marker``."""
    import builtins
    return {
        'os_system': _Evil(os.system, (f'touch {marker}', )),
        'exec': _Evil(builtins.exec, (f'open({marker!r}, "w").close()', )),
        'subprocess': _Evil(subprocess.call, (['touch', marker], )),
    }


# Checkpoint files that cannot be read: (id, writer(assets, tmp) -> path,
# fragments). The fragments name the problem; every message also names
# the path and a fix (checked by the test).
def _ckpt_cases() -> List[Tuple[str, Callable, List[str]]]:
    cases = []
    for size in (1, 7, 64, 1000, 100000):
        for seed in (0, 1):
            cases.append(
                (f'random-{size}B-seed{seed}', lambda a, t, n=size, s=seed:
                 _write(osp.join(t, 'random.pth'), _random_bytes(n, s)),
                 ['cannot be read safely']))
    cases.append(
        ('empty', lambda a, t: _write(osp.join(t, 'e.pth'), b''), ['empty']))
    for frac in (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                 0.9, 0.95, 0.99, 0.999):
        cases.append(
            (f'truncated-{frac:g}',
             lambda a, t, f=frac: _truncate(a.ckpt, osp.join(t, 'cut.pth'), f),
             ['cannot be read safely']))
    for frac in (0.01, 0.3, 0.6, 0.99):
        cases.append(
            (f'truncated-legacy-{frac:g}', lambda a, t, f=frac: _truncate(
                a.legacy_ckpt, osp.join(t, 'cut.pth'), f),
             ['cannot be read safely']))
    cases.append(('header-smashed',
                  lambda a, t: _smash(a.ckpt, osp.join(t, 'smashed.pth')),
                  ['cannot be read safely']))
    # Other files given as a checkpoint, renamed or not.
    cases += [
        ('json',
         lambda a, t: _write(osp.join(t, 'model.json'), b'{"state_dict": {}}'),
         ['cannot be read safely']),
        ('json-renamed-pth',
         lambda a, t: _write(osp.join(t, 'model.pth'), b'[1, 2, 3]\n'),
         ['cannot be read safely']),
        ('py-config', lambda a, t: _copy(a.coco_cfg, osp.join(t, 'cfg.py')),
         ['cannot be read safely']),
        ('py-config-renamed-pth',
         lambda a, t: _copy(a.coco_cfg, osp.join(t, 'cfg.pth')),
         ['cannot be read safely']),
        ('png-renamed-pth',
         lambda a, t: _copy(_first_image(a.coco), osp.join(t, 'img.pth')),
         ['cannot be read safely']),
        ('coco-annotations', lambda a, t: _copy(
            osp.join(a.coco, 'annotations', 'instances_val2017.json'),
            osp.join(t, 'ann.pth')), ['cannot be read safely']),
        ('text', lambda a, t: _write(
            osp.join(t, 'notes.pth'), b'these are not weights\n' * 50),
         ['cannot be read safely']),
        ('directory', lambda a, t: _mkdir(osp.join(t, 'ckpt.pth')),
         ['is a directory']),
        ('symlink-loop', lambda a, t: _symlink_loop(osp.join(t, 'loop.pth')),
         ['symbolic link loop']),
        ('broken-symlink', lambda a, t: _symlink(
            osp.join(t, 'gone.pth'), osp.join(t, 'link.pth')),
         ['broken symbolic link']),
        ('missing', lambda a, t: osp.join(t, 'no_such.pth'),
         ['does not exist']),
        ('missing-dir', lambda a, t: osp.join(t, 'no', 'such', 'dir.pth'),
         ['does not exist']),
    ]
    # Pickles that would run code if loaded unsafely.
    for name in ('os_system', 'exec', 'subprocess'):
        for protocol in (0, 2, 4, 5):
            cases.append(
                (f'pickle-{name}-protocol{protocol}',
                 lambda a, t, n=name, p=protocol: _evil_pickle(t, n, p),
                 ['cannot be read safely']))
        cases.append(
            (f'torch-zip-{name}', lambda a, t, n=name: _evil_torch(t, n, True),
             ['cannot be read safely']))
        cases.append((f'torch-legacy-{name}',
                      lambda a, t, n=name: _evil_torch(t, n, False),
                      ['cannot be read safely']))
    return cases


def _truncate(src: str, dst: str, frac: float) -> str:
    with open(src, 'rb') as f:
        data = f.read()
    return _write(dst, data[:max(1, int(len(data) * frac))])


def _smash(src: str, dst: str) -> str:
    with open(src, 'rb') as f:
        data = bytearray(f.read())
    data[:64] = _random_bytes(64, 3)
    return _write(dst, bytes(data))


def _copy(src: str, dst: str) -> str:
    os.makedirs(osp.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _mkdir(path: str) -> str:
    os.makedirs(path)
    return path


def _symlink(target: str, path: str) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    os.symlink(target, path)
    return path


def _symlink_loop(path: str) -> str:
    return _symlink(path, path)


def _first_image(coco: str) -> str:
    folder = osp.join(coco, 'val2017')
    return osp.join(folder, sorted(os.listdir(folder))[0])


def _evil_pickle(tmp: str, name: str, protocol: int) -> str:
    obj = dict(state_dict=_evil_payloads(osp.join(tmp, MARKER))[name])
    return _write(
        osp.join(tmp, 'evil.pth'), pickle.dumps(obj, protocol=protocol))


def _evil_torch(tmp: str, name: str, zip_format: bool) -> str:
    path = osp.join(tmp, 'evil.pth')
    obj = dict(
        meta={}, state_dict={'w': _evil_payloads(osp.join(tmp, MARKER))[name]})
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


# What a well-formed file may hold that is still no usable checkpoint:
# (id, object to torch.save, fragments for psbn2bn, for analyze_collapse).
def _content_cases() -> List[Tuple[str, Any, List[str], List[str]]]:
    t = torch.ones(4)
    no_sd = ['no state dict of tensors']
    return [
        ('list', [t, t], ['expected a checkpoint dict'], no_sd),
        ('tuple', (t, ), ['expected a checkpoint dict'], no_sd),
        ('tensor', t, ['expected a checkpoint dict'], no_sd),
        ('int', 3, ['expected a checkpoint dict'], no_sd),
        ('str', 'weights', ['expected a checkpoint dict'], no_sd),
        ('none', None, ['expected a checkpoint dict'], no_sd),
        ('empty-dict', {}, ['no psBN layer'], no_sd),
        ('meta-only', dict(meta=dict(epoch=3)), ['no psBN layer'], no_sd),
        ('state-dict-list', dict(state_dict=[t]), ['no psBN layer'], no_sd),
        ('state-dict-of-ints', dict(state_dict={'a.weight': 1}),
         ['no psBN layer'], no_sd),
        ('no-norm-layer', dict(state_dict={'conv.weight': torch.ones(2, 2)}),
         ['no psBN layer'], ['no BatchNorm-like layer']),
    ]


def _psbn_entry(prefix='bn.', **over) -> dict:
    entry = {
        'weight': torch.ones(4),
        'bias': torch.zeros(4),
        'running_mean': torch.zeros(4),
        'running_var': torch.ones(4),
        'num_batches_tracked': torch.tensor(0),
        'alpha': torch.tensor(0.1)
    }
    entry.update(over)
    return {prefix + k: v for k, v in entry.items() if v is not None}


# State dicts whose tensors are wrong: (id, state dict, tools -> fragments).
def _tensor_cases() -> List[Tuple[str, dict, Dict[str, List[str]]]]:
    nan, inf = float('nan'), float('inf')
    cases = []
    for name, value in (('nan', nan), ('inf', inf), ('-inf', -inf)):
        for key in ('weight', 'bias', 'running_var'):
            bad = torch.ones(4)
            bad[1] = value
            cases.append((f'{key}-{name}', _psbn_entry(**{key: bad}),
                          dict(psbn2bn=['NaN or inf', f'bn.{key}'])))
        cases.append((f'alpha-{name}', _psbn_entry(alpha=torch.tensor(value)),
                      dict(psbn2bn=['NaN or inf', 'bn.alpha'])))
    for dtype in (torch.int64, torch.int32, torch.bool, torch.complex64,
                  torch.uint8):
        name = str(dtype).split('.')[-1]
        cases.append(
            (f'weight-{name}', _psbn_entry(weight=torch.ones(4, dtype=dtype)),
             dict(analyze_collapse=['bn.weight', name])))
        cases.append(
            (f'bias-{name}', _psbn_entry(bias=torch.zeros(4, dtype=dtype)),
             dict(analyze_collapse=['bn.bias', name])))
    for name, alpha in (('int', torch.tensor(1)), ('bool', torch.tensor(True)),
                        ('vector', torch.full(
                            (4, ), 0.1)), ('matrix', torch.full((2, 2), 0.1))):
        cases.append((f'alpha-{name}', _psbn_entry(alpha=alpha),
                      dict(psbn2bn=['no psBN layer'])))
    cases.append(('psbn-without-bias', _psbn_entry(bias=None),
                  dict(psbn2bn=['has no bias', 'bn'])))
    cases.append(('weight-2d', _psbn_entry(weight=torch.ones(4, 1)),
                  dict(analyze_collapse=['no BatchNorm-like layer'])))
    cases.append(('bias-shorter', _psbn_entry(bias=torch.zeros(3)),
                  dict(analyze_collapse=['no BatchNorm-like layer'])))
    return cases


# Checkpoints of the wrong model for tools/test.py on the CIFAR config:
# (id, change to the valid state dict, fragments).
def _model_cases() -> List[Tuple[str, Callable, List[str]]]:

    def first_weight(sd):
        return next(k for k in sd if k.endswith('conv1.weight'))

    def change(fn):

        def apply(sd):
            key = first_weight(sd)
            sd[key] = fn(sd[key])
            return sd

        return apply

    return [
        ('wrong-shape', change(lambda w: w[:, :1].clone()),
         ['has shape', 'conv1.weight']),
        ('transposed', change(lambda w: w.transpose(0, 1).clone()),
         ['has shape', 'conv1.weight']),
        ('int-weights', change(lambda w: w.long()), ['int64', 'conv1']),
        ('bool-weights', change(lambda w: w > 0), ['bool', 'conv1']),
        ('complex-weights', change(lambda w: w.to(torch.complex64)),
         ['complex64', 'conv1']),
        ('nan-weights', change(lambda w: w * float('nan')),
         ['NaN or inf', 'conv1']),
        ('inf-weights', change(lambda w: w + float('inf')),
         ['NaN or inf', 'conv1']),
        ('missing-layer3', lambda sd: {
            k: v
            for k, v in sd.items() if 'layer3' not in k
        }, ['lacks', 'parameters', 'layer3']),
        ('other-model', lambda sd: {
            'backbone.stem.x.weight': torch.ones(3)
        }, ['shares no key']),
        ('module-prefixed-other-model', lambda sd: {
            'module.stem.fc.weight': torch.ones(3)
        }, ['shares no key']),
    ]


_RUNNER_KEY_TYPOS = [
    ('optim_wraper', 'optim_wrapper'),
    ('optim_wrapperr', 'optim_wrapper'),
    ('train_dataloder', 'train_dataloader'),
    ('val_dataloadr', 'val_dataloader'),
    ('test_dataloder', 'test_dataloader'),
    ('param_schedular', 'param_scheduler'),
    ('defualt_hooks', 'default_hooks'),
    ('custom_hook', 'custom_hooks'),
    ('val_evalutor', 'val_evaluator'),
    ('train_cgf', 'train_cfg'),
    ('load_form', 'load_from'),
    ('randomnes', 'randomness'),
    ('auto_scale_l', 'auto_scale_lr'),
    ('log_procesor', 'log_processor'),
]

_OPTION_TYPOS = [
    ('optim_wraper.optimizer.lr=0.1', 'optim_wrapper'),
    ('train_dataloder.batch_size=4', 'train_dataloader'),
    ('model.backbone.dpth=18', 'model.backbone.depth'),
    ('model.bbox_head.num_clases=5', 'model.bbox_head.num_classes'),
    ('train_dataloader.batch_sise=4', 'train_dataloader.batch_size'),
    ('train_cfg.max_epoch=1', 'train_cfg.max_epochs'),
    ('default_hooks.checkpnt.interval=1', 'default_hooks.checkpoint'),
    ('optim_wrapper.optimizer.weight_decy=0', 'weight_decay'),
    ('param_schedular.0.end=3', 'param_scheduler'),
    ('model.neck.out_channel=8', 'model.neck.out_channels'),
]

#: The config cases that tools/test.py gets too (each loads a config).
_ALSO_TEST = ('optim_wraper', 'test_dataloder', 'val_evalutor', 'load_form',
              'model.backbone.dpth=18', 'train_dataloader.batch_sise=4',
              'optim_wraper.optimizer.lr=0.1', 'missing', 'directory',
              'syntax-error', 'missing-custom-import')


def _bad_config_files() -> List[Tuple[str, Callable, List[str]]]:
    return [
        ('missing', lambda a, t: osp.join(t, 'nope.py'), ['does not exist']),
        ('directory', lambda a, t: _mkdir(osp.join(t, 'cfg.py')),
         ['is a directory']),
        ('png-renamed-py',
         lambda a, t: _copy(_first_image(a.coco), osp.join(t, 'cfg.py')),
         ['cannot be read']),
        ('random-bytes-py',
         lambda a, t: _write(osp.join(t, 'cfg.py'), _random_bytes(300, 5)),
         ['cannot be read']),
        ('syntax-error',
         lambda a, t: _write(osp.join(t, 'cfg.py'), b'model = dict(type=\n'),
         ['cannot be read', 'SyntaxError']),
        ('name-error', lambda a, t: _write(
            osp.join(t, 'cfg.py'), b'model = dict(type=undefined_name)\n'),
         ['cannot be read', 'NameError']),
        ('missing-base', lambda a, t: _write(
            osp.join(t, 'cfg.py'), b"_base_ = './no_such_base.py'\n"),
         ['cannot be read']),
        ('unknown-mmdet-base', lambda a, t: _write(
            osp.join(t, 'cfg.py'), b"_base_ = 'mmdet::no/such_config.py'\n"),
         ['cannot be read']),
        ('missing-custom-import', lambda a, t: _write(
            osp.join(t, 'cfg.py'),
            b"custom_imports = dict(imports=['no_such_plugin_xyz'], "
            b'allow_failed_imports=False)\n'), ['no_such_plugin_xyz']),
        ('invalid-json',
         lambda a, t: _write(osp.join(t, 'cfg.json'), b'{"model": '),
         ['cannot be read']),
        ('invalid-yaml',
         lambda a, t: _write(osp.join(t, 'cfg.yaml'), b'model: [unclosed\n'),
         ['cannot be read']),
        ('txt-extension', lambda a, t: _write(
            osp.join(t, 'cfg.txt'), b"model = dict(type='X')\n"),
         ['cannot be read']),
    ]


def _coco_copy(assets: Assets, tmp: str) -> str:
    root = osp.join(tmp, 'coco')
    shutil.copytree(assets.coco, root)
    return root + '/'


def _coco_cfg(root: str, tmp: str) -> str:
    from ..conftest import write_toy_config
    return write_toy_config(osp.join(tmp, 'cfg.py'), root)


def _break_ann(split: str, data: Optional[bytes] = None, obj: Any = None):

    def make(a, t):
        root = _coco_copy(a, t)
        path = osp.join(root, 'annotations', f'instances_{split}2017.json')
        if obj is not None:
            _write(path, json.dumps(obj).encode())
        elif callable(data):
            with open(path, 'rb') as f:
                _write(path, data(f.read()))
        else:
            _write(path, data)
        return _coco_cfg(root, t), path

    return make


def _break_image(split: str, how: str):

    def make(a, t):
        root = _coco_copy(a, t)
        path = _first_image(root).replace('val2017', f'{split}2017') \
            if split == 'val' else osp.join(
                root, 'train2017',
                sorted(os.listdir(osp.join(root, 'train2017')))[0])
        if how == 'missing':
            os.remove(path)
        elif how == 'random':
            _write(path, _random_bytes(2000, 7))
        elif how == 'empty':
            _write(path, b'')
        elif how == 'text':
            _write(path, b'<html>not found</html>\n')
        elif how == 'directory':
            os.remove(path)
            os.makedirs(path)
        return _coco_cfg(root, t), path

    return make


def _ann_cases() -> List[Tuple[str, Callable, List[str]]]:
    cases = []
    for split in ('train', 'val'):
        cases += [
            (f'{split}-ann-random', _break_ann(split,
                                               _random_bytes(500,
                                                             9)), ['not']),
            (f'{split}-ann-empty', _break_ann(split, b''), ['not valid JSON']),
            (f'{split}-ann-truncated',
             _break_ann(split, lambda d: d[:len(d) // 2]), ['not valid JSON']),
            (f'{split}-ann-list', _break_ann(split, obj=[1, 2]),
             ['not a COCO annotation file', 'list']),
            (f'{split}-ann-no-images',
             _break_ann(split, obj=dict(annotations=[], categories=[])),
             ['not a COCO annotation file', 'images']),
            (f'{split}-ann-image-without-file-name',
             _break_ann(
                 split,
                 obj=dict(images=[dict(id=1)], annotations=[],
                          categories=[])), ['file_name']),
        ]
        for how, fragment in (('missing', 'does not exist'),
                              ('random', 'is not an image'), ('empty',
                                                              'is empty'),
                              ('text', 'is not an image'), ('directory',
                                                            'is a directory')):
            cases.append((f'{split}-image-{how}', _break_image(split, how),
                          [fragment, 'Put the images']))
    return cases


def _cifar_cases() -> List[Tuple[str, Callable, List[str]]]:

    def broken(name, fn):

        def make(a, t):
            root = osp.join(t, 'cifar')
            shutil.copytree(a.cifar, root)
            path = osp.join(root, 'cifar-10-batches-py', name)
            with open(path, 'rb') as f:
                data = f.read()
            _write(path, fn(data, t))
            return root, path

        return make

    cases = []
    for name in ('data_batch_1', 'test_batch'):
        cases += [
            (f'{name}-truncated-10', broken(name, lambda d, t: d[:10]),
             ['is not a CIFAR-10 pickle']),
            (f'{name}-truncated-half',
             broken(name, lambda d, t: d[:len(d) // 2]),
             ['is not a CIFAR-10 pickle']),
            (f'{name}-random',
             broken(name, lambda d, t: _random_bytes(3000, 11)),
             ['is not a CIFAR-10 pickle']),
            (f'{name}-empty', broken(name, lambda d, t: b''),
             ['is not a CIFAR-10 pickle']),
            (f'{name}-list',
             broken(name, lambda d, t: pickle.dumps([1, 2], protocol=2)),
             ['is not a CIFAR-10 batch']),
            (f'{name}-no-data',
             broken(name, lambda d, t: pickle.dumps(dict(labels=[1]))),
             ['no data/labels']),
            (f'{name}-wrong-shape',
             broken(
                 name, lambda d, t: pickle.dumps(
                     dict(data=np.zeros(
                         (2, 10), np.uint8), labels=[0, 1]))), ['N x 3072']),
            (f'{name}-evil-pickle',
             broken(
                 name, lambda d, t: pickle.dumps(
                     dict(
                         data=_evil_payloads(osp.join(t, MARKER))['os_system'],
                         labels=[0]),
                     protocol=2)), ['is not allowed']),
        ]
    return cases


def _tool_cases() -> List[ToolCase]:
    cases: List[ToolCase] = []

    def add(id, tool, make, **kw):
        cases.append(ToolCase(f'{tool}/{id}', tool, make, **kw))

    # -- checkpoint files, every tool that reads one -----------------------
    for cid, writer, fragments in _ckpt_cases():
        add(f'ckpt-{cid}',
            'psbn2bn',
            lambda a, t, w=writer, f=fragments:
            ([w(a, t), osp.join(t, 'out', 'bn.pth')], f))
        add(f'ckpt-{cid}',
            'analyze_collapse',
            lambda a, t, w=writer, f=fragments:
            ([w(a, t), '--out-dir',
              osp.join(t, 'report')], f))
        add(f'ckpt-{cid}',
            'ensemble_eval',
            lambda a, t, w=writer, f=fragments:
            ([a.cifar_cfg, w(a, t)], f),
            work_dir=True)
    # the config tools: a sample of the same files (each loads a config)
    sample = [
        c for c in _ckpt_cases()
        if c[0] in ('random-1000B-seed0', 'empty', 'truncated-0.5', 'json',
                    'png-renamed-pth', 'directory', 'symlink-loop', 'missing',
                    'pickle-os_system-protocol2', 'torch-zip-exec')
    ]
    for cid, writer, fragments in sample:
        add(f'ckpt-{cid}',
            'test',
            lambda a, t, w=writer, f=fragments:
            ([a.cifar_cfg, w(a, t)], f),
            work_dir=True)
        add(f'resume-{cid}',
            'train',
            lambda a, t, w=writer, f=fragments:
            ([a.cifar_cfg, '--resume', w(a, t)], f),
            work_dir=True)
        add(f'load-from-{cid}',
            'train',
            lambda a, t, w=writer, f=fragments:
            ([a.cifar_cfg, '--cfg-options', f'load_from={w(a, t)}'], f),
            work_dir=True)

    # -- well-formed files with the wrong content ---------------------------
    for cid, obj, f_fold, f_analyze in _content_cases():

        def save(t, o=obj):
            path = osp.join(t, 'content.pth')
            torch.save(o, path)
            return path

        add(f'content-{cid}',
            'psbn2bn',
            lambda a, t, s=save, f=f_fold: ([s(t), osp.join(t, 'bn.pth')], f))
        add(f'content-{cid}',
            'analyze_collapse',
            lambda a, t, s=save, f=f_analyze:
            ([s(t), '--out-dir', osp.join(t, 'report')], f))
    for cid, state, by_tool in _tensor_cases():
        for tool, fragments in by_tool.items():

            def save(t, sd=state):
                path = osp.join(t, 'state.pth')
                torch.save(dict(state_dict=sd), path)
                return path

            if tool == 'psbn2bn':
                make = (lambda a, t, s=save, f=fragments:
                        ([s(t), osp.join(t, 'bn.pth')], f))
            else:
                make = (lambda a, t, s=save, f=fragments:
                        ([s(t), '--out-dir',
                          osp.join(t, 'report')], f))
            add(f'tensors-{cid}', tool, make)
    for cid, change, fragments in _model_cases():

        def wrong(a, t, c=change):
            ckpt = torch.load(a.cifar_ckpt, weights_only=True)
            path = osp.join(t, 'wrong.pth')
            torch.save(dict(meta={}, state_dict=c(ckpt['state_dict'])), path)
            return path

        add(f'model-{cid}',
            'test',
            lambda a, t, w=wrong, f=fragments:
            ([a.cifar_cfg, w(a, t)], f),
            work_dir=True)
    for cid in ('wrong-shape', 'nan-weights', 'int-weights', 'other-model'):
        change, fragments = next(
            (c, f) for i, c, f in _model_cases() if i == cid)

        def wrong(a, t, c=change):
            ckpt = torch.load(a.cifar_ckpt, weights_only=True)
            path = osp.join(t, 'wrong.pth')
            torch.save(dict(meta={}, state_dict=c(ckpt['state_dict'])), path)
            return path

        # --resume must fit exactly; a finetune's load_from may differ in
        # shape (the head), never in dtype or finiteness.
        add(f'resume-model-{cid}',
            'train',
            lambda a, t, w=wrong, f=fragments:
            ([a.cifar_cfg, '--resume', w(a, t)], f),
            work_dir=True)

    # -- configs ------------------------------------------------------------
    for typo, right in _RUNNER_KEY_TYPOS:

        def typo_cfg(a, t, typo=typo):
            path = osp.join(t, 'cfg.py')
            with open(path, 'w') as f:
                f.write(f'_base_ = {a.coco_cfg!r}\n{typo} = dict()\n')
            return path

        for tool in ('train', 'test') if typo in _ALSO_TEST else ('train', ):
            extra = [] if tool == 'train' else [None]
            add(f'config-key-{typo}',
                tool,
                lambda a, t, c=typo_cfg, x=extra, k=typo, r=right:
                ([c(a, t)] + [a.ckpt for _ in x], [repr(k), repr(r)]),
                work_dir=True)
    for option, right in _OPTION_TYPOS:
        for tool in ('train', 'test') if option in _ALSO_TEST else ('train', ):
            extra = [] if tool == 'train' else [None]
            add(f'cfg-options-{option.split("=")[0]}',
                tool,
                lambda a, t, o=option, x=extra, r=right:
                ([a.coco_cfg] + [a.ckpt for _ in x] + ['--cfg-options', o],
                 [o.split('=')[0], r, 'did you mean']),
                work_dir=True)
    for cid, writer, fragments in _bad_config_files():
        add(f'config-file-{cid}',
            'train',
            lambda a, t, w=writer, f=fragments: ([w(a, t)], f),
            work_dir=True)
        if cid in _ALSO_TEST:
            add(f'config-file-{cid}',
                'test',
                lambda a, t, w=writer, f=fragments: ([w(a, t), a.ckpt], f),
                work_dir=True)

    # -- data roots -----------------------------------------------------------
    for cid, value in (('missing-root', 'no_such_root/'), ('root-is-a-file',
                                                           'file_root/')):

        def cfg_for(a, t, v=value):
            root = osp.join(t, v)
            if v.startswith('file'):
                _write(root.rstrip('/'), b'x')
            return _coco_cfg(root, t), root

        for tool in ('train', 'test'):
            extra = [] if tool == 'train' else [None]
            add(f'data-{cid}',
                tool,
                lambda a, t, c=cfg_for, x=extra:
                (lambda cfg_root:
                 ([cfg_root[0]] + [a.ckpt for _ in x],
                  [cfg_root[1], 'make_toy_coco.py']))(c(a, t)),
                work_dir=True)

    def missing_ann(a, t):
        root = _coco_copy(a, t)
        path = osp.join(root, 'annotations', 'instances_train2017.json')
        os.remove(path)
        return [_coco_cfg(root, t)], [path, 'ann_file']

    add('data-missing-ann-file', 'train', missing_ann, work_dir=True)
    for cid, make, fragments in _ann_cases():
        tools = ('train', 'test') if cid.startswith('val') else ('train', )
        for tool in tools:
            extra = [] if tool == 'train' else [None]
            add(f'data-{cid}',
                tool,
                lambda a, t, m=make, f=fragments, x=extra:
                (lambda cp:
                 ([cp[0]] + [a.ckpt for _ in x], f + [cp[1]]))(m(a, t)),
                work_dir=True)
    for cid, make, fragments in _cifar_cases():
        tool = 'test' if 'test_batch' in cid else 'train'

        def cifar_run(a, t, m=make, f=fragments, tool=tool):
            root, path = m(a, t)
            cfg = osp.join(t, 'cfg.py')
            with open(cfg, 'w') as fh:
                fh.write(f'_base_ = {a.cifar_cfg!r}\n'
                         f'train_dataloader = dict(dataset=dict('
                         f'data_root={root!r}))\n'
                         f'val_dataloader = dict(dataset=dict('
                         f'data_root={root!r}))\n'
                         'test_dataloader = val_dataloader\n')
            argv = [cfg] + ([a.cifar_ckpt] if tool == 'test' else [])
            return argv, f + [path]

        add(f'cifar-{cid}', tool, cifar_run, work_dir=True)

    # -- the other options ----------------------------------------------------
    for opt, value, fragments in (
        ('--gamma-thr', '-1', ['gamma_thr', '-1']),
        ('--gamma-thr', '0', ['gamma_thr']),
        ('--gamma-thr', 'nan', ['gamma_thr', 'nan']),
        ('--gamma-thr', 'inf', ['gamma_thr', 'inf']),
        ('--prob-thr', '0', ['prob_thr']),
        ('--prob-thr', '1', ['prob_thr']),
        ('--prob-thr', '1.5', ['prob_thr', '1.5']),
        ('--prob-thr', 'nan', ['prob_thr', 'nan']),
        ('--zero-init-layers', '(bn', ['--zero-init-layers', '(bn']),
        ('--zero-init-layers', '[', ['--zero-init-layers', 'regular']),
    ):
        add(f'option{opt}={value}',
            'analyze_collapse',
            lambda a, t, o=opt, v=value, f=fragments:
            ([a.ckpt, o, v, '--out-dir',
              osp.join(t, 'report')], f))
    add(
        'out-dir-is-a-file', 'analyze_collapse', lambda a, t:
        ([a.ckpt, '--out-dir',
          _write(osp.join(t, 'f'), b'x')], ['--out-dir', 'is a file']))
    add(
        'out-dir-under-a-file', 'collapse_lab', lambda a, t: ([
            '--skip-training', '--out-dir',
            osp.join(_write(osp.join(t, 'f'), b'x'), 'lab')
        ], ['--out-dir', 'is a file']))
    for tool in ('train', 'test'):
        add('work-dir-is-a-file',
            tool,
            lambda a, t, x=tool == 'test':
            ([a.cifar_cfg] + ([a.cifar_ckpt] if x else []) + [
                '--work-dir', _write(osp.join(t, 'w'), b'x')
            ], ['--work-dir', 'is a file']))
    add(
        'option-labels-count', 'analyze_collapse', lambda a, t: ([
            a.ckpt, a.ckpt, '--labels', 'one', '--out-dir',
            osp.join(t, 'report')
        ], ['1 labels for 2 checkpoints']))
    add(
        'out-is-a-directory', 'psbn2bn', lambda a, t:
        ([a.ckpt, _mkdir(osp.join(t, 'out'))], ['is a directory']))
    add(
        'out-under-a-file', 'psbn2bn', lambda a, t:
        ([a.ckpt, osp.join(_write(osp.join(t, 'f'), b'x'), 'bn.pth')],
         ['is a file']))
    add(
        'out-is-in', 'psbn2bn', lambda a, t:
        ([_copy(a.ckpt, osp.join(t, 'in.pth')),
          osp.join(t, 'in.pth')], ['is IN']))
    add('out-not-pkl',
        'test',
        lambda a, t:
        ([a.cifar_cfg, a.cifar_ckpt, '--out',
          osp.join(t, 'r.txt')], ['--out', '.pkl']),
        work_dir=True)
    for value in ('0', '-2'):
        add(f'last={value}',
            'ensemble_eval',
            lambda a, t, v=value: ([
                a.cifar_cfg, '--last', v, '--work-dir',
                _mkdir(osp.join(t, 'w'))
            ], ['--last', v]))
    add('no-snapshots-given', 'ensemble_eval', lambda a, t:
        ([a.cifar_cfg], ['give snapshot files or --work-dir']))
    add(
        'work-dir-without-snapshots', 'ensemble_eval', lambda a, t:
        ([a.cifar_cfg, '--work-dir',
          _mkdir(osp.join(t, 'w'))], ['no snapshots', 'RestartSnapshotHook']))
    for opt, value in (('--threads', '0'), ('--threads', '-1'), ('--workers',
                                                                 '0')):
        add(f'{opt}={value}',
            'collapse_lab',
            lambda a, t, o=opt, v=value:
            ([o, v, '--out-dir', osp.join(t, 'lab')], [o, v]))
    for cid, data in (('missing', None), ('not-json', b'{"a": '),
                      ('random', _random_bytes(100, 2)), ('list', b'[1]'),
                      ('missing-keys', b'{"mc_n": 10}')):

        def settings(a, t, d=data):
            path = osp.join(t, 'settings.json')
            if d is not None:
                _write(path, d)
            return path

        add(f'settings-{cid}',
            'collapse_lab',
            lambda a, t, s=settings:
            (['--settings',
              s(a, t), '--out-dir',
              osp.join(t, 'lab')], ['--settings', 'settings.json']))
    add(
        'threads=0', 'misc/demo', lambda a, t:
        (['--threads', '0', '--work-dir',
          osp.join(t, 'demo')], ['--threads', '0']))
    for tool in ('misc/make_toy_coco', 'misc/make_toy_cifar'):
        add('root-is-a-file', tool, lambda a, t:
            ([_write(osp.join(t, 'root'), b'x')], ['root']))
        add(
            'num-train=0', tool, lambda a, t:
            ([osp.join(t, 'new_root'), '--num-train', '0'], ['num_train']))
        add(
            'num-train=-3', tool, lambda a, t:
            ([osp.join(t, 'new_root'), '--num-train', '-3'], ['num_train']))
    add(
        'image-size=8', 'misc/make_toy_coco', lambda a, t:
        ([osp.join(t, 'new_root'), '--image-size', '8'], ['image_size']))
    return cases


def _ctor_cases() -> List[CtorCase]:
    from mmengine.registry import MODELS

    import mmdet_psbn  # noqa: F401  registers the layers and hooks
    from mmdet_psbn.engine.hooks.collapse_monitor_hook import \
        CollapseMonitorHook
    from mmdet_psbn.engine.hooks.preemption_hook import \
        PreemptionCheckpointHook
    from mmdet_psbn.models.layers import convert_to_psbn

    bad_alphas = [('negative', -0.1), ('minus-one', -1), ('zero-int', 0),
                  ('zero-float', 0.0), ('minus-zero', -0.0),
                  ('nan', float('nan')), ('inf', float('inf')),
                  ('minus-inf', float('-inf')), ('str', '0.1'),
                  ('list', [0.1]), ('tuple', (0.1, )),
                  ('tensor-0d', torch.tensor(0.1)),
                  ('tensor-2', torch.tensor([0.1, 0.2])), ('true', True),
                  ('false', False), ('none', None), ('dict', {}),
                  ('complex', 0.1j), ('numpy-negative', np.float64(-1.0)),
                  ('numpy-nan', np.float32('nan')),
                  ('numpy-array', np.array([0.1]))]
    layers = {
        'psBN': dict(num_features=4),
        'psBN1d': dict(num_features=4),
        'psBN2d': dict(num_features=4),
        'psBN3d': dict(num_features=4),
        'psSyncBN': dict(num_features=4),
        'psGN': dict(num_channels=4, num_groups=2),
        'psIN': dict(num_features=4, affine=True),
        'psIN1d': dict(num_features=4, affine=True),
        'psIN2d': dict(num_features=4, affine=True),
        'psIN3d': dict(num_features=4, affine=True),
    }
    cases = []
    for name, alpha in bad_alphas:
        fragments = ['alpha', 'finite positive', _short_repr(alpha)]
        for layer, kwargs in layers.items():
            cases.append(
                CtorCase(
                    f'{layer}/alpha-{name}',
                    lambda t=layer, k=kwargs, a=alpha: MODELS.build(
                        dict(type=t, alpha=a, **k)),
                    ValueError,
                    fragments))
        cases.append(
            CtorCase(
                f'convert_to_psbn/alpha-{name}',
                lambda a=alpha: convert_to_psbn(
                    torch.nn.Sequential(torch.nn.BatchNorm2d(4)), a),
                ValueError,
                fragments))
    hook_args = {
        'interval': [0, -1, 1.5, '5', True, None],
        'gamma_thr':
        [0, -1e-3, float('nan'),
         float('inf'), '1e-3', None, True],
        'prob_thr': [0, 1, 1.5, -0.1,
                     float('nan'), 'x', None, True],
        'jump_thr': [0, 1.5, -1, float('nan'), 'x', None, True],
        'zero_init_layers': ['(', '[', 5, ['bn3']],
        'by_stage': ['yes', 1, None],
        'flops': ['no', 0, None],
        'activation': ['x', 0.5, None],
        'out_dir': ['', '  ', None, 5],
    }
    for arg, values in hook_args.items():
        for value in values:
            cases.append(
                CtorCase(
                    f'CollapseMonitorHook/{arg}={value!r}',
                    lambda k=arg, v=value: CollapseMonitorHook(**{k: v}),
                    ValueError, [arg, _short_repr(value)]))
    for value in (-1, 256, 1000, 1.5, '143', True, False, [143]):
        cases.append(
            CtorCase(
                f'PreemptionCheckpointHook/exit_code={value!r}',
                lambda v=value: PreemptionCheckpointHook(exit_code=v),
                ValueError, ['exit_code', _short_repr(value)]))
    return cases


def _short_repr(value) -> str:
    """What a message shows of ``value``: its repr (a tensor's first line)."""
    text = repr(value)
    if isinstance(value, float) and math.isnan(value):
        return 'nan'
    return text.splitlines()[0][:20]


TOOL_CASES: List[ToolCase] = _tool_cases()
CTOR_CASES: List[CtorCase] = _ctor_cases()
#: How many hostile inputs the corpus tries (docs/errors.md quotes it).
NUM_CASES = len(TOOL_CASES) + len(CTOR_CASES)
