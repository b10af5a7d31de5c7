# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR-10 from the standard python batches, mmpretrain-style.

The data root holds the folder of the official "CIFAR-10 python version"
archive (https://www.cs.toronto.edu/~kriz/cifar.html, extracted)::

    <data_root>/cifar-10-batches-py/data_batch_1 ... data_batch_5
                                    test_batch
                                    batches.meta

Each batch is a pickled dict with ``b'data'`` (uint8, N x 3072: the 1024
red, then green, then blue values of a 32x32 image, row-major) and
``b'labels'`` (N ints in 0..9); ``batches.meta`` has ``b'label_names'``.
Nothing is downloaded. Without the data, :func:`make_toy_cifar`
(``python tools/misc/make_toy_cifar.py ROOT``) writes a small set in the
same format.

Images are kept in one uint8 (N, 32, 32, 3) RGB array; a data item is
``dict(img=..., gt_label=..., sample_idx=...)``, plus ``true_label`` when
the labels are randomised.
"""
import os
import os.path as osp
import pickle
import shutil
import tempfile
from typing import List, Optional, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from mmdet_psbn.utils.checks import InputError
from . import cifar_transforms  # noqa: F401  registers PackInputs...

__all__ = ['CIFAR10', 'CIFAR10_CLASSES', 'make_toy_cifar', 'random_labels']

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')
BASE_FOLDER = 'cifar-10-batches-py'
TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_BATCHES = ('test_batch', )
META_FILE = 'batches.meta'
TOY_MANIFEST = 'toy_cifar.txt'


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


def _read_batch(path: str):
    with open(path, 'rb') as f:
        entry = pickle.load(f, encoding='bytes')
    data = entry.get(b'data', entry.get('data'))
    labels = entry.get(b'labels', entry.get('labels'))
    if data is None or labels is None:
        raise InputError(f'{path!r} is not a CIFAR-10 batch (no data/labels '
                         f'entries; keys {sorted(map(str, entry))[:5]})')
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise InputError(f'{path!r}: expected N x 3072 uint8 data and N '
                         f'labels, got {data.shape} and {len(labels)}')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(
        labels, dtype=np.int64)


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
        InputError: the folder or a batch file is missing (the message says
            where to put the data and how to make the toy set), or a file is
            not a CIFAR batch.
    """
    METAINFO = dict(classes=CIFAR10_CLASSES)

    @classmethod
    def missing_data_hint(cls, data_root: str) -> str:
        """Where the data goes, for the tools' data-root check."""
        return _missing_message(data_root.rstrip('/'), osp.join(
            data_root.rstrip('/'), BASE_FOLDER), ['the whole folder'])

    def __init__(self,
                 data_root: str = '',
                 test_mode: bool = False,
                 pipeline: Sequence = (),
                 random_labels: bool = False,
                 random_label_seed: int = 0,
                 **kwargs) -> None:
        if not data_root:
            raise InputError('CIFAR10 needs data_root, the folder that '
                             f'contains {BASE_FOLDER}/')
        self.random_labels = bool(random_labels)
        self.random_label_seed = int(random_label_seed)
        self.images: Optional[np.ndarray] = None
        kwargs.setdefault('serialize_data', False)
        super().__init__(
            data_root=data_root,
            test_mode=test_mode,
            pipeline=list(pipeline),
            **kwargs)

    def load_data_list(self) -> List[dict]:
        root = self.data_root.rstrip('/')
        folder = osp.join(root, BASE_FOLDER)
        names = TEST_BATCHES if self.test_mode else TRAIN_BATCHES
        missing = [n for n in names + (META_FILE, )
                   if not osp.isfile(osp.join(folder, n))]
        if missing:
            raise InputError(_missing_message(root, folder, missing))
        with open(osp.join(folder, META_FILE), 'rb') as f:
            meta = pickle.load(f, encoding='bytes')
        names_ = meta.get(b'label_names', meta.get('label_names'))
        if names_:
            self._metainfo['classes'] = tuple(
                n.decode() if isinstance(n, bytes) else n for n in names_)
        images, labels = zip(*(_read_batch(osp.join(folder, n))
                               for n in names))
        self.images = np.ascontiguousarray(np.concatenate(images))
        true = np.concatenate(labels)
        gt = (random_labels(len(true), len(self._metainfo['classes']),
                            self.random_label_seed)
              if self.random_labels else true)
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
        return np.array([self.get_data_info(i)['gt_label']
                         for i in range(len(self))], dtype=np.int64)


def make_toy_cifar(root: str, num_train: int = 200, num_test: int = 100,
                   seed: int = 0, force: bool = False) -> str:
    """Write a small CIFAR-10-format data root and return it.

    ``<root>/cifar-10-batches-py/`` gets ``data_batch_1..5`` (``num_train``
    images in all), ``test_batch`` (``num_test``) and ``batches.meta``, in
    the official pickled format. An image of class ``c`` is a noisy
    colour blob whose hue and position depend on ``c``, so a network can
    learn it. Deterministic (numpy ``RandomState(seed)``); written into a
    temporary folder beside ``root`` and moved into place, so an
    interrupted run leaves nothing half-written. A root already holding the
    same toy set is left as is (unless ``force``); another toy set there is
    replaced.

    Raises:
        FileExistsError: ``<root>/cifar-10-batches-py`` exists and is not a
            toy set (real CIFAR data is never overwritten).
        ValueError: too few images asked for.
    """
    root = root.rstrip('/') or '.'
    stamp = f'num_train={num_train} num_test={num_test} seed={seed} v1\n'
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

    os.makedirs(osp.dirname(osp.abspath(root)), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.toy_cifar.', dir=osp.dirname(
        osp.abspath(root)))
    try:
        folder = osp.join(tmp, BASE_FOLDER)
        os.makedirs(folder)
        splits = np.array_split(np.arange(num_train), 5)
        data, labels = draw(num_train)
        for i, idx in enumerate(splits, 1):
            with open(osp.join(folder, f'data_batch_{i}'), 'wb') as f:
                pickle.dump({b'batch_label': f'toy batch {i}'.encode(),
                             b'data': data[idx],
                             b'labels': [labels[j] for j in idx]}, f)
        data, labels = draw(num_test)
        with open(osp.join(folder, 'test_batch'), 'wb') as f:
            pickle.dump({b'batch_label': b'toy test batch', b'data': data,
                         b'labels': labels}, f)
        with open(osp.join(folder, META_FILE), 'wb') as f:
            pickle.dump({b'label_names': [c.encode()
                                          for c in CIFAR10_CLASSES],
                         b'num_cases_per_batch': len(splits[0]),
                         b'num_vis': 3072}, f)
        with open(osp.join(folder, TOY_MANIFEST), 'w') as f:
            f.write(stamp)
        os.makedirs(root, exist_ok=True)
        target = osp.join(root, BASE_FOLDER)
        if osp.isdir(target):
            shutil.rmtree(target)
        os.replace(folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
