# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .toy_coco import TOY_CLASSES, make_toy_coco
from . import cifar  # noqa: F401  registers CIFAR10, PackInputs, RandomCrop

__all__ = ['TOY_CLASSES', 'make_toy_coco']
