# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR backbones, registered in mmengine's root ``MODELS``."""
from .cifar_resnet import CIFARBasicBlock, CIFARResNet
from .vgg_cifar import CIFARVGG

__all__ = ['CIFARBasicBlock', 'CIFARResNet', 'CIFARVGG']
