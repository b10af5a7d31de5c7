# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""VGG with a norm layer after every conv, for 32x32 CIFAR images.

VGG-16 (Simonyan & Zisserman 2015, configuration D) keeps its 13 3x3 convs
(64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3, M) with a norm layer
and an activation after each (``features.<i>.conv`` / ``.bn`` / ``.act``).
After the five max-pools a 32x32 image is 1x1x512, so the usual CIFAR
variant replaces the three fully connected layers by one 512 -> 10 linear
classifier: here a ``GlobalAveragePooling`` neck (a no-op reshape at 1x1)
and a ``LinearClsHead``. About 14.7 M parameters.

Norm and activation come from ``norm_cfg`` / ``act_cfg`` as in
:mod:`.cifar_resnet`.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule

from ..registry import MODELS
from .cifar_resnet import DEFAULT_INIT

__all__ = ['CIFARVGG']

ARCH = {
    11: (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    13:
    (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    16: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
         512, 512, 512, 'M'),
    19: (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512,
         512, 'M', 512, 512, 512, 512, 'M'),
}


@MODELS.register_module()
class CIFARVGG(BaseModule):
    """VGG-11/13/16/19 with norm layers, for CIFAR (``'CIFARVGG'``).

    Args:
        depth (int): 11, 13, 16 or 19. Defaults to 16.
        width_mult (float): Scales every conv's channel count (tests use a
            narrow net). Defaults to 1.
        norm_cfg (dict): Defaults to ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict): Defaults to ``dict(type='ReLU', inplace=True)``.
        init_cfg: As :class:`~.CIFARResNet`.

    Returns a one-tuple with the (N, C, 1, 1) feature map.
    """

    def __init__(self,
                 depth: int = 16,
                 width_mult: float = 1.0,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 init_cfg: Optional[list] = DEFAULT_INIT) -> None:
        super().__init__(init_cfg)
        if depth not in ARCH:
            raise ValueError(f'CIFARVGG depth must be one of {sorted(ARCH)}, '
                             f'got {depth!r}')
        if not (isinstance(width_mult, (int, float)) and width_mult > 0):
            raise ValueError(f'width_mult must be > 0, got {width_mult!r}')
        layers = []
        in_ch = 3
        for v in ARCH[depth]:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out_ch = max(1, int(round(v * width_mult)))
            # ConvModule names its parts conv / bn (or gn) / activate.
            layers.append(
                ConvModule(
                    in_ch,
                    out_ch,
                    3,
                    padding=1,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.features(x), )
