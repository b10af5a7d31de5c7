# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR-10 from the official python batches, its transforms, the GPU-resident
variant, and the CIFAR-format digit and toy sets."""
from .cifar import (CIFAR10, CIFAR10_CLASSES, CIFARDataError, load_cifar_split,
                    make_toy_cifar, random_labels, write_cifar_folder)
from .cifar_device import DeviceCIFAR10, prebatched_collate
from .digits import make_digits_cifar
from .transforms import PackInputs, RandomCrop

__all__ = [
    'CIFAR10', 'CIFAR10_CLASSES', 'CIFARDataError', 'DeviceCIFAR10',
    'PackInputs', 'RandomCrop', 'load_cifar_split', 'make_digits_cifar',
    'make_toy_cifar', 'prebatched_collate', 'random_labels',
    'write_cifar_folder'
]
