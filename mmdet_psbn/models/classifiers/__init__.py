# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""An mmpretrain-style image classifier (backbone -> neck -> head).

Registered in mmengine's root registries, so configs build it with no scope
(``default_scope = 'mmengine'``) and mmpretrain is not needed. Users who have
mmpretrain can use its own ``ImageClassifier`` (scope ``mmpretrain``) with
``norm_cfg=dict(type='psBN')`` instead: psBN is in the root registry too.
"""
from .image import (ClsDataPreprocessor, CropFlipDataPreprocessor,
                    GlobalAveragePooling, ImageClassifier, LinearClsHead,
                    random_crop_flip)

__all__ = [
    'ClsDataPreprocessor', 'CropFlipDataPreprocessor', 'GlobalAveragePooling',
    'ImageClassifier', 'LinearClsHead', 'random_crop_flip'
]
