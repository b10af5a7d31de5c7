# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .toy_coco import TOY_CLASSES, make_toy_coco

__all__ = ['TOY_CLASSES', 'make_toy_coco']
