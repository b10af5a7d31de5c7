# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Helpers for the psBN tests: small nets, randomised BN state.

A plain module (not a conftest) so that tests import it by name.
"""
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import mmdet_psbn  # noqa: F401  registers psBN, installs the upstream patches


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN layer non-trivial weight, bias and running statistics, so
    that a conversion that forgets any of them changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, _BatchNorm):
                continue
            n = m.num_features
            if m.weight is not None:
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(n, generator=gen) * 0.3)
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model


class TinyBlock(nn.Module):
    """A torchvision-style residual block (conv1/bn1, downsample.0/.1)."""

    def __init__(self, cin, cout, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = norm(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = norm(cout)
        self.downsample = nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), norm(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class TinyNet(nn.Module):
    """Conv1/bn1 stem and two nested blocks, torchvision naming."""

    def __init__(self, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = norm(4)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(
            TinyBlock(4, 6, norm), TinyBlock(6, 6, norm))

    def forward(self, x):
        return self.layer1(self.relu(self.bn1(self.conv1(x))))


def tiny_input(seed=1, shape=(2, 3, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
