# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Detection data made here, nothing downloaded: the toy COCO set and the real-
digit COCO set (``make demo``).

Not imported by ``import mmdet_psbn``.
The CIFAR-10 dataset and the CIFAR-format digit set are in the
``psbn_cifar`` project (``projects/psbn_cifar``).
"""
from .digits_coco import DIGIT_CLASSES, make_digits_coco
from .mnist_digits import MNIST_CLASSES, MNISTDigitsNotFound, load_mnist_digits
from .toy_coco import TOY_CLASSES, make_toy_coco

__all__ = [
    'DIGIT_CLASSES', 'MNIST_CLASSES', 'MNISTDigitsNotFound', 'TOY_CLASSES',
    'load_mnist_digits', 'make_digits_coco', 'make_toy_coco'
]
