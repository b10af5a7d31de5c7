# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .toy_coco import TOY_CLASSES, make_toy_coco
from .digits_coco import DIGIT_CLASSES, make_digits_cifar, make_digits_coco
from . import cifar  # noqa: F401  registers CIFAR10, PackInputs, RandomCrop
from . import cifar_device  # noqa: F401  DeviceCIFAR10, prebatched_collate

__all__ = ['TOY_CLASSES', 'make_toy_coco']
__all__ += ['DIGIT_CLASSES', 'make_digits_coco', 'make_digits_cifar']
