# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The CIFAR ResNets of He et al. (2016, §4.2): ResNet-20/32/44/56/110.

Conventions: channel counts come first; the norm layer and the activation
come from ``norm_cfg`` / ``act_cfg`` (mmcv's ``build_norm_layer`` /
``build_activation_layer``), so ``norm_cfg=dict(type='psBN')`` gives psBN
layers that keep BN's names (``bn1``, ``bn2``) and BN checkpoints load.

The network, for depth :math:`d = 6n + 2`:

- a 3x3 conv with 16 filters, norm, activation (``conv1``, ``bn1``);
- three stages (``layer1..3``) of :math:`n` basic blocks each, with 16, 32
  and 64 channels; the first block of stages 2 and 3 has stride 2
  (32x32 -> 16x16 -> 8x8);
- a basic block is conv3x3-norm-act-conv3x3-norm, plus the shortcut, then
  the activation.

Shortcuts where the shape changes:

- ``'A'`` (the default, He et al.'s choice for CIFAR): parameter-free, the
  identity subsampled by 2 and zero-padded with the missing channels. This
  gives the published parameter counts, with the 10-way linear classifier:
  0.27 M (ResNet-20), 0.85 M (-56), 1.7 M (-110).
- ``'B'``: a 1x1 conv with stride 2 and a norm layer (``downsample.0/1``),
  slightly more parameters.

The backbone returns the last stage's feature map (N, 64, 8, 8) as a
one-tuple (mmpretrain's convention for ``out_indices=(2, )``).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule

from ..registry import MODELS

__all__ = ['CIFARResNet', 'CIFARBasicBlock']

DEFAULT_INIT = [
    dict(
        type='Kaiming', layer=['Conv2d'], mode='fan_out', nonlinearity='relu'),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
]


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad to ``out_channels``.

    Parameter-free, so a residual block keeps the identity's information and
    adds none."""

    def __init__(self, in_channels: int, out_channels: int,
                 stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f'option A cannot reduce channels: '
                             f'{in_channels} -> {out_channels}')
        self.stride = stride
        self.pad = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        front = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, front, self.pad - front))

    def extra_repr(self) -> str:
        return f'stride={self.stride}, pad={self.pad}'


class CIFARBasicBlock(BaseModule):
    """Conv3x3-norm-act-conv3x3-norm, + shortcut, act (He et al. 2016).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first conv. Defaults to 1.
        shortcut (str): ``'A'`` (zero padding) or ``'B'`` (1x1 conv + norm)
            when the shape changes. Defaults to ``'A'``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to
            ``dict(type='ReLU', inplace=True)``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 shortcut: str = 'A',
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, out_channels, 1)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, out_channels, 2)
        self.add_module(self.norm2_name, norm2)
        # One module per use, so that hooks (FLOPs accounting) see each.
        self.act1 = build_activation_layer(act_cfg)
        self.act2 = build_activation_layer(act_cfg)
        if stride == 1 and in_channels == out_channels:
            self.downsample = None
        elif shortcut == 'A':
            self.downsample = ZeroPadShortcut(in_channels, out_channels,
                                              stride)
        else:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                build_norm_layer(norm_cfg, out_channels)[1])

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + identity)


@MODELS.register_module()
class CIFARResNet(BaseModule):
    """ResNet for 32x32 CIFAR images (He et al. 2016, §4.2).

    Registered in the ``psbn_cifar`` scope's ``MODELS`` as
    ``'CIFARResNet'``.

    Args:
        depth (int): 6n + 2: 20, 32, 44, 56, 110 (or any such number).
        base_channels (int): Channels of stage 1; stages 2 and 3 have 2x and
            4x. Defaults to 16 (the paper's).
        shortcut (str): ``'A'`` (parameter-free, the paper's, default) or
            ``'B'`` (1x1 conv + norm) where the shape changes.
        norm_cfg (dict): Norm layer, e.g. ``dict(type='psBN')``. Defaults to
            ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict): Activation, e.g. ``dict(type='LeakyReLU',
            negative_slope=0.01)``. Defaults to ReLU.
        out_indices (Sequence[int]): Stages (0..2) whose outputs are
            returned. Defaults to ``(2, )``.
        init_cfg: Defaults to He (Kaiming normal, fan-out) init of convs and
            unit-gamma, zero-beta norm layers.
    """

    def __init__(self,
                 depth: int,
                 base_channels: int = 16,
                 shortcut: str = 'A',
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 out_indices: Sequence[int] = (2, ),
                 init_cfg: Optional[list] = DEFAULT_INIT) -> None:
        super().__init__(init_cfg)
        if (isinstance(depth, bool) or not isinstance(depth, int) or depth < 8
                or (depth - 2) % 6):
            raise ValueError(f'CIFARResNet depth must be 6n + 2 with n >= 1 '
                             f'(20, 32, 44, 56, 110), got {depth!r}')
        if shortcut not in ('A', 'B'):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if not all(0 <= i <= 2 for i in out_indices):
            raise ValueError(f'out_indices must be in 0..2, got '
                             f'{out_indices!r}')
        self.depth = depth
        self.out_indices = tuple(out_indices)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, base_channels, 3, 1, 1, bias=False)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, base_channels, 1)
        self.add_module(self.norm1_name, norm1)
        self.act = build_activation_layer(act_cfg)
        in_ch = base_channels
        self.res_layers = []
        for i in range(3):
            out_ch = base_channels * 2**i
            blocks = []
            for j in range(n):
                blocks.append(
                    CIFARBasicBlock(in_ch, out_ch, 2 if (i and not j) else 1,
                                    shortcut, norm_cfg, act_cfg))
                in_ch = out_ch
            name = f'layer{i + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.res_layers.append(name)
        self.out_channels = in_ch

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.act(self.norm1(self.conv1(x)))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
