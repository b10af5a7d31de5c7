# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR-10 from the standard python batches, mmpretrain-style.

The data root holds the folder of the official "CIFAR-10 python version"
archive (https://www.cs.toronto.edu/~kriz/cifar.html, extracted)::

    <data_root>/cifar-10-batches-py/data_batch_1 ... data_batch_5
                                    test_batch
                                    batches.meta

Each batch is a dict pickled by Python 2 with ``'data'`` (uint8, N x 3072:
the 1024 red, then green, then blue values of a 32x32 image, row-major) and
``'labels'`` (N ints in 0..9); ``batches.meta`` has ``'label_names'``.
Python 2's ``str`` keys load as ``str`` under ``encoding='latin1'`` (what
mmpretrain and torchvision use) and as ``bytes`` under ``encoding='bytes'``;
this reader takes both. Nothing is downloaded. Without the data,
:func:`make_toy_cifar` (``python tools/misc/make_toy_cifar.py ROOT``) writes
a small set that :func:`write_cifar_folder` pickles as Python 2 did, so any
reader of the official archive reads it.

Images are kept in one uint8 (N, 32, 32, 3) RGB array; a data item is
``dict(img=..., gt_label=..., sample_idx=...)``, plus ``true_label`` when
the labels are randomised.
"""
import os
import os.path as osp
import pickle
import struct
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import BaseDataset

from mmdet_psbn.utils.checks import DataError
from mmdet_psbn.utils.io import atomic_dir
from ..registry import DATASETS, SCOPE, TRANSFORMS
from . import transforms  # noqa: F401  registers PackInputs...

__all__ = [
    'BASE_FOLDER', 'CIFAR10', 'CIFAR10_CLASSES', 'CIFARDataError',
    'load_cifar_split', 'make_toy_cifar', 'random_labels', 'write_cifar_folder'
]

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')
BASE_FOLDER = 'cifar-10-batches-py'
TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_BATCHES = ('test_batch', )
META_FILE = 'batches.meta'
TOY_MANIFEST = 'toy_cifar.txt'


class CIFARDataError(DataError):
    """The CIFAR-10 data root is missing, incomplete or not CIFAR-10.

    The message says what is wrong and where the data goes. A
    :class:`mmdet_psbn.utils.checks.DataError` (a ``ValueError``), so the
    tools report it in one line with exit status 2.
    """


def random_labels(num: int, num_classes: int, seed: int) -> np.ndarray:
    """The fixed random labels of the random-label experiment (§3.3).

    One label per image, drawn uniformly from numpy's seeded
    ``RandomState`` (MT19937, stable across numpy versions and platforms):
    the same for every epoch, worker and process given the same ``seed``
    and set size; about ``1 - 1/num_classes`` of them differ from the true
    labels.
    """
    return np.random.RandomState(seed).randint(
        0, num_classes, size=num).astype(np.int64)


def _missing_message(root: str, folder: str, missing: Sequence[str]) -> str:
    return (f'CIFAR-10 data not found: {folder!r} lacks '
            f'{", ".join(missing)}. Put the extracted "CIFAR-10 python '
            f'version" archive there ({root}/{BASE_FOLDER}/data_batch_1..5, '
            f'test_batch, batches.meta from '
            f'https://www.cs.toronto.edu/~kriz/cifar.html), or make the toy '
            f'set with `python tools/misc/make_toy_cifar.py {root}`')


#: What a CIFAR-10 pickle may name: numpy's array (and scalar)
#: reconstruction, under the module names of numpy 1 and 2.
_CIFAR_GLOBALS = {
    (module, name)
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
    for name in ('_reconstruct', 'scalar')
} | {('numpy', 'ndarray'), ('numpy', 'dtype')}


class _CIFARUnpickler(pickle.Unpickler):
    """Loads numpy arrays, lists, dicts and strings, and nothing that runs
    code: a pickle naming any other global (``os.system``...) is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f'global {module}.{name} is not allowed (a CIFAR-10 batch '
                'holds only numpy arrays, lists and strings; the file was '
                'not run)')
        return super().find_class(module, name)


def _load(path: str) -> dict:
    """A CIFAR pickle with ``str`` keys, whether written by Python 2 (the
    official archive), by Python 3 with ``str`` or with ``bytes`` keys.

    Only numpy's array globals are allowed (:class:`_CIFARUnpickler`).
    """
    with open(path, 'rb') as f:
        try:
            entry = _CIFARUnpickler(f, encoding='latin1').load()
        except Exception as e:
            raise CIFARDataError(
                f'{path!r} is not a CIFAR-10 pickle ({type(e).__name__}: '
                f'{e}); replace it from the official archive or make the '
                f'toy set again') from None
    if not isinstance(entry, dict):
        raise CIFARDataError(f'{path!r} is not a CIFAR-10 batch (a '
                             f'{type(entry).__name__}, not a dict)')
    return {
        k.decode('latin1') if isinstance(k, bytes) else k: v
        for k, v in entry.items()
    }


def _read_batch(path: str):
    entry = _load(path)
    data, labels = entry.get('data'), entry.get('labels')
    if data is None or labels is None:
        raise CIFARDataError(
            f'{path!r} is not a CIFAR-10 batch (no data/labels entries; '
            f'keys {sorted(map(str, entry))[:5]})')
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise CIFARDataError(
            f'{path!r}: expected N x 3072 uint8 data and N labels, got '
            f'{data.shape} and {len(labels)}')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(
        labels, dtype=np.int64)


def load_cifar_split(
        data_root: str,
        test_mode: bool = False) -> Tuple[np.ndarray, np.ndarray, tuple]:
    """Read a CIFAR-10 split: ``(images, labels, class_names)``.

    ``images`` is one uint8 (N, 32, 32, 3) RGB array, ``labels`` int64 (N,),
    ``class_names`` from ``batches.meta`` (empty if it has none).

    Raises:
        CIFARDataError: a file is missing (the message says where the data
            goes and how to make the toy set) or is not a CIFAR batch.
    """
    message = CIFAR10.missing_data(data_root, test_mode)
    if message:
        raise CIFARDataError(message)
    folder = osp.join(data_root.rstrip('/'), BASE_FOLDER)
    names = TEST_BATCHES if test_mode else TRAIN_BATCHES
    classes = _load(osp.join(folder, META_FILE)).get('label_names') or ()
    classes = tuple(n.decode() if isinstance(n, bytes) else n for n in classes)
    images, labels = zip(*(_read_batch(osp.join(folder, n)) for n in names))
    return (np.ascontiguousarray(np.concatenate(images)),
            np.concatenate(labels), classes)


@DATASETS.register_module()
class CIFAR10(BaseDataset):
    """CIFAR-10 from ``<data_root>/cifar-10-batches-py`` (``'CIFAR10'``).

    Args:
        data_root (str): The folder that contains ``cifar-10-batches-py``.
        test_mode (bool): ``False``: the 50 000 training images
            (``data_batch_1..5``); ``True``: the 10 000 test images.
        pipeline (list): Transforms, e.g. ``RandomCrop``, ``RandomFlip``,
            ``PackInputs``.
        random_labels (bool): Replace every label by a fixed random one
            (:func:`random_labels`), keeping the true one as ``true_label``.
            Defaults to False.
        random_label_seed (int): Seed of the random labels. Defaults to 0.
        **kwargs: ``BaseDataset``'s (``indices``, ``lazy_init``...).

    Raises:
        CIFARDataError: the folder or a batch file is missing (the message
            says where to put the data and how to make the toy set), or a
            file is not a CIFAR batch.
    """
    METAINFO = dict(classes=CIFAR10_CLASSES)

    @classmethod
    def missing_data(cls,
                     data_root: str,
                     test_mode: bool = False) -> Optional[str]:
        """What is missing under ``data_root`` and where the data goes, or
        None if nothing is: the tools check this before building anything
        (:func:`mmdet_psbn.utils.checks.check_data_paths`)."""
        root = data_root.rstrip('/')
        folder = osp.join(root, BASE_FOLDER)
        if not osp.isdir(folder):
            return _missing_message(root, folder, ['the whole folder'])
        names = TEST_BATCHES if test_mode else TRAIN_BATCHES
        missing = [
            n for n in names + (META_FILE, )
            if not osp.isfile(osp.join(folder, n))
        ]
        return _missing_message(root, folder, missing) if missing else None

    def __init__(self,
                 data_root: str = '',
                 test_mode: bool = False,
                 pipeline: Sequence = (),
                 random_labels: bool = False,
                 random_label_seed: int = 0,
                 **kwargs) -> None:
        if not data_root:
            raise CIFARDataError('CIFAR10 needs data_root, the folder '
                                 f'that contains {BASE_FOLDER}/')
        self.random_labels = bool(random_labels)
        self.random_label_seed = int(random_label_seed)
        self.images: Optional[np.ndarray] = None
        kwargs.setdefault('serialize_data', False)
        super().__init__(
            data_root=data_root,
            test_mode=test_mode,
            # Built in this project's scope, as mmpretrain's datasets build
            # theirs: 'RandomCrop' is ours even where mmdet's scope is the
            # current one; 'mmdet.RandomCrop' still names mmdet's.
            pipeline=[
                TRANSFORMS.build(dict(t, _scope_=t.get('_scope_', SCOPE)))
                if isinstance(t, dict) else t for t in pipeline
            ],
            **kwargs)

    def load_data_list(self) -> List[dict]:
        images, true, classes = load_cifar_split(self.data_root,
                                                 self.test_mode)
        if classes:
            self._metainfo['classes'] = classes
        self.images = images
        gt = (
            random_labels(
                len(true), len(self._metainfo['classes']),
                self.random_label_seed) if self.random_labels else true)
        data_list = []
        for i in range(len(true)):
            info = dict(img_idx=i, gt_label=int(gt[i]))
            if self.random_labels:
                info['true_label'] = int(true[i])
            data_list.append(info)
        return data_list

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        info['img'] = self.images[info['img_idx']]
        info['img_shape'] = info['ori_shape'] = (32, 32)
        return info

    @property
    def gt_labels(self) -> np.ndarray:
        """The (possibly random) labels of all items, in order."""
        return np.array(
            [self.get_data_info(i)['gt_label'] for i in range(len(self))],
            dtype=np.int64)


class _Python2Pickler(pickle._Pickler):
    """Pickles ``str`` and ``bytes`` as Python 2's ``str`` (``BINSTRING``).

    That is how the official archive was written: its keys then load as
    ``'data'`` under ``encoding='latin1'`` and as ``b'data'`` under
    ``encoding='bytes'``, and numpy arrays load under both. Python 3's own
    pickler writes ``str`` as unicode (always ``'data'``) and ``bytes``
    through ``_codecs.encode``, which a ``bytes`` reader cannot decode.
    """
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj) -> None:
        data = obj.encode('latin1') if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def write_cifar_folder(folder: str, train: Tuple[np.ndarray, Sequence[int]],
                       test: Tuple[np.ndarray, Sequence[int]],
                       classes: Sequence[str], name: str) -> None:
    """Write a ``cifar-10-batches-py`` folder as the official archive is.

    Args:
        folder (str): The folder to write (created if missing).
        train (tuple): ``(data, labels)``: uint8 N x 3072 rows (R, G, B
            planes of 32x32) and N ints; split into ``data_batch_1..5``.
        test (tuple): The same for ``test_batch``.
        classes (Sequence[str]): ``label_names`` of ``batches.meta``.
        name (str): Put in each batch's ``batch_label``.
    """
    os.makedirs(folder, exist_ok=True)

    def dump(file, obj):
        with open(osp.join(folder, file), 'wb') as f:
            _Python2Pickler(f, protocol=2).dump(obj)

    data, labels = train
    splits = np.array_split(np.arange(len(data)), len(TRAIN_BATCHES))
    for i, (file, idx) in enumerate(zip(TRAIN_BATCHES, splits), 1):
        dump(
            file, {
                'batch_label': f'{name} training batch {i} of 5',
                'data': np.ascontiguousarray(data[idx]),
                'labels': [int(labels[j]) for j in idx]
            })
    data, labels = test
    dump(
        TEST_BATCHES[0], {
            'batch_label': f'{name} testing batch 1 of 1',
            'data': np.ascontiguousarray(data),
            'labels': [int(c) for c in labels]
        })
    dump(
        META_FILE, {
            'label_names': list(classes),
            'num_cases_per_batch': len(splits[0]),
            'num_vis': 3072
        })


def make_toy_cifar(root: str,
                   num_train: int = 200,
                   num_test: int = 100,
                   seed: int = 0,
                   force: bool = False) -> str:
    """Write a small CIFAR-10-format data root and return it.

    ``<root>/cifar-10-batches-py/`` gets ``data_batch_1..5`` (``num_train``
    images in all), ``test_batch`` (``num_test``) and ``batches.meta``, in
    the official pickled format. An image of class ``c`` is a noisy
    colour blob whose hue and position depend on ``c``, so a network can
    learn it. Deterministic (numpy ``RandomState(seed)``); written into a
    temporary folder and moved into place
    (:func:`mmdet_psbn.utils.io.atomic_dir`), so an interrupted run leaves
    nothing half-written. A root already holding the
    same toy set is left as is (unless ``force``); another toy set there is
    replaced.

    Raises:
        FileExistsError: ``<root>/cifar-10-batches-py`` exists and is not a
            toy set (real CIFAR data is never overwritten).
        ValueError: too few images asked for.
    """
    root = root.rstrip('/') or '.'
    stamp = f'num_train={num_train} num_test={num_test} seed={seed} v2\n'
    manifest = osp.join(root, BASE_FOLDER, TOY_MANIFEST)
    if osp.isfile(manifest):
        with open(manifest) as f:
            if f.read() == stamp and not force:
                return root
    elif osp.exists(osp.join(root, BASE_FOLDER)):
        raise FileExistsError(
            f'{osp.join(root, BASE_FOLDER)!r} exists and is not a toy set '
            '(no toy_cifar.txt); refusing to overwrite it')
    if num_train < 5 or num_test < 1:
        raise ValueError(f'need num_train >= 5 and num_test >= 1, got '
                         f'{num_train}, {num_test}')
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    palette = rng.uniform(30, 225, size=(10, 3)).astype(np.float32)
    centres = rng.uniform(8, 24, size=(10, 2)).astype(np.float32)

    def draw(n):
        labels = rng.randint(0, 10, size=n)
        imgs = rng.normal(128, 30, size=(n, 32, 32, 3)).astype(np.float32)
        for i, c in enumerate(labels):
            cy, cx = centres[c] + rng.normal(0, 2, size=2)
            mask = np.exp(-((yy - cy)**2 + (xx - cx)**2) / 40.0)[..., None]
            imgs[i] = imgs[i] * (1 - mask) + palette[c] * mask
        imgs = np.clip(imgs, 0, 255).astype(np.uint8)
        data = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
        return data, [int(c) for c in labels]

    with atomic_dir(osp.join(root, BASE_FOLDER)) as folder:
        write_cifar_folder(folder, draw(num_train), draw(num_test),
                           CIFAR10_CLASSES, 'toy')
        with open(osp.join(folder, TOY_MANIFEST), 'w') as f:
            f.write(stamp)
    return root
