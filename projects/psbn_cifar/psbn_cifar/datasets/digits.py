# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Real MNIST digits as a CIFAR-10-format classification set.

32x32 crops drawn by :func:`mmdet_psbn.datasets.digits_coco.draw_crop` (one
digit each, on a background of its own), label names ``'0'`` .. ``'9'``,
written by :func:`~.cifar.write_cifar_folder` so that :class:`~.CIFAR10`
(and any reader of the official archive) reads them::

    <root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta

Training crops use only ``load_mnist_digits('train')``, test crops only
``load_mnist_digits('test')``. Written atomically by
:func:`mmdet_psbn.datasets.toy_coco.build_data_root`.
"""
import os.path as osp
from typing import Dict

import numpy as np

from mmdet_psbn.datasets.digits_coco import DIGIT_CLASSES, check_int, draw_crop
from mmdet_psbn.datasets.mnist_digits import load_mnist_digits
from mmdet_psbn.datasets.toy_coco import build_data_root
from .cifar import BASE_FOLDER, write_cifar_folder

__all__ = ['make_digits_cifar']

CIFAR_MANIFEST = 'digits_cifar.json'
# 2: pickled as Python 2 wrote the official archive (str keys).
FORMAT_VERSION = 2


def make_digits_cifar(root: str,
                      num_train: int = 4000,
                      num_test: int = 1000,
                      min_size: int = 16,
                      max_size: int = 28,
                      seed: int = 0,
                      force: bool = False) -> Dict:
    """Write the digit classification set under ``root`` in the CIFAR-10 python
    format (module docstring), for :class:`CIFAR10`.

    The first ``num_train`` digits of ``load_mnist_digits('train')`` (all
    4,000 by default) make the training batches, the first ``num_test`` of
    ``load_mnist_digits('test')`` the test batch, each once, in a seeded
    random order. Images are RGB (CIFAR's channel order).

    Args:
        root (str): The data root to create (``CIFAR10``'s ``data_root``).
        num_train (int): Training images, 5 .. 4000. Defaults to 4000.
        num_test (int): Test images, 1 .. 1000. Defaults to 1000.
        min_size (int): Smallest ink height. Defaults to 16.
        max_size (int): Largest ink height, at most 32. Defaults to 28.
        seed (int): Seed of the training images; the test images use
            ``seed + 1``. Defaults to 0.
        force (bool): Rebuild even if the same set exists.

    Returns:
        dict: The manifest written to ``root/digits_cifar.json``.
    """
    for name, value, low in (('num_train', num_train,
                              5), ('num_test', num_test, 1), ('min_size',
                                                              min_size, 4),
                             ('max_size', max_size, 4), ('seed', seed, 0)):
        check_int(name, value, low)
    if not min_size <= max_size <= 32:
        raise ValueError('need min_size <= max_size <= 32, got '
                         f'min_size={min_size}, max_size={max_size}')
    train_digits, train_labels = load_mnist_digits('train')
    test_digits, test_labels = load_mnist_digits('test')
    if num_train > len(train_digits) or num_test > len(test_digits):
        raise ValueError(
            f'num_train must be <= {len(train_digits)} and num_test <= '
            f'{len(test_digits)}, got {num_train} and {num_test}')
    args = dict(
        format_version=FORMAT_VERSION,
        num_train=num_train,
        num_test=num_test,
        min_size=min_size,
        max_size=max_size,
        seed=seed)

    def draw(digits, labels, num, seed_):
        rng = np.random.RandomState(seed_)
        order = rng.permutation(num)
        imgs = np.stack(
            [draw_crop(rng, digits[i], 32, min_size, max_size) for i in order])
        # cv2's BGR -> CIFAR's rows of R, then G, then B planes.
        data = imgs[..., ::-1].transpose(0, 3, 1, 2).reshape(num, 3072)
        return np.ascontiguousarray(data), [int(labels[i]) for i in order]

    def write(tmp):
        write_cifar_folder(
            osp.join(tmp, BASE_FOLDER),
            draw(train_digits, train_labels, num_train, seed),
            draw(test_digits, test_labels, num_test, seed + 1), DIGIT_CLASSES,
            'digits')

    return build_data_root(root, CIFAR_MANIFEST, args, write,
                           'digits CIFAR set', force)
