# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR backbones and an mmpretrain-style image classifier.

Users who have mmpretrain can use its own ``ImageClassifier`` (scope
``mmpretrain``) with ``norm_cfg=dict(type='psBN')`` instead: psBN is in the
root registry, so every scope finds it. The classes here are in the
``psbn_cifar`` scope (:mod:`psbn_cifar.registry`).
"""
from .cifar_resnet import CIFARBasicBlock, CIFARResNet
from .classifier import (ClsDataPreprocessor, CropFlipDataPreprocessor,
                         GlobalAveragePooling, ImageClassifier, LinearClsHead,
                         random_crop_flip)
from .vgg_cifar import CIFARVGG

__all__ = [
    'CIFARBasicBlock', 'CIFARResNet', 'CIFARVGG', 'ClsDataPreprocessor',
    'CropFlipDataPreprocessor', 'GlobalAveragePooling', 'ImageClassifier',
    'LinearClsHead', 'random_crop_flip'
]
