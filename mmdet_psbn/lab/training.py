# Copyright (c) mmdet-psbn contributors. All rights reserved.
r"""Filter collapse under warm-restart training, at CPU scale.

The paper trains CIFAR ResNets for 9 x 100 epochs; here the same
:class:`~mmdet_psbn.models.backbones.CIFARResNet` (depth 20, narrowed by
``base_channels``) trains for a few short cosine rounds on the toy
CIFAR-format set of :func:`~mmdet_psbn.datasets.make_toy_cifar`, with
random labels by default (paper §3.3: collapse appears even then), in a
plain PyTorch loop (many tiny runs; the Runner's overhead would dominate).

Scale notes (what differs from the paper, on purpose):

- images are average-pooled 32x32 -> 16x16 (4x fewer FLOPs; the network is
  fully convolutional up to global pooling);
- weight decay is larger (``5e-3`` by default against the paper's 5e-4):
  a dead channel's :math:`\gamma` decays like
  :math:`(1 - \eta\lambda/(1-\mu))^t`, so reaching the collapse threshold
  |γ| < 1e-3 takes ~10x fewer steps; only the product
  :math:`\eta\lambda t` matters for that decay.

At the end of every round the model is measured with
:func:`~mmdet_psbn.analysis.measure_model` (collapsed and dead shares) and
:func:`~mmdet_psbn.analysis.flops.channel_flops` (FLOPs sparsity).
"""
import math
import os.path as osp
import pickle
import tempfile
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_psbn.analysis.collapse import attach_flops, measure_model
from mmdet_psbn.analysis.flops import channel_flops
from mmdet_psbn.datasets.cifar import make_toy_cifar, random_labels
from mmdet_psbn.models.backbones.cifar_resnet import CIFARResNet

__all__ = ['NORMS', 'load_toy_cifar', 'build_net', 'train_rounds']

# name -> (norm_cfg, act_cfg)
NORMS = {
    'BN': (dict(type='BN'), dict(type='ReLU', inplace=True)),
    'BN+LReLU': (dict(type='BN'),
                 dict(type='LeakyReLU', negative_slope=0.01, inplace=True)),
    'psBN': (dict(type='psBN'), dict(type='ReLU', inplace=True)),
}


def load_toy_cifar(num_train: int = 512, seed: int = 0, size: int = 16,
                   random_label: bool = True, label_seed: int = 0):
    """The toy CIFAR-format training set as tensors ``(x, y)``: written by
    :func:`make_toy_cifar` into a temporary folder, read back from the
    official pickled format, normalised per channel and pooled to
    ``size``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_toy_cifar(osp.join(tmp, 'cifar'), num_train=num_train,
                              num_test=10, seed=seed)
        data, labels = [], []
        for i in range(1, 6):
            with open(osp.join(root, 'cifar-10-batches-py',
                               f'data_batch_{i}'), 'rb') as f:
                d = pickle.load(f)
            data.append(d[b'data'])
            labels += list(d[b'labels'])
    x = torch.from_numpy(np.concatenate(data)).float().view(-1, 3, 32, 32)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3),
                                                      keepdim=True)
    if size != 32:
        x = F.adaptive_avg_pool2d(x, size)
    y = (random_labels(len(labels), 10, label_seed) if random_label
         else np.asarray(labels))
    return x.contiguous(), torch.as_tensor(y, dtype=torch.long)


class _Net(nn.Module):
    """CIFARResNet + global average pooling + linear classifier."""

    def __init__(self, backbone: nn.Module, num_classes: int = 10):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def build_net(norm: str, width: int = 8, depth: int = 20,
              gamma_init: float = 1.0, seed: int = 0) -> nn.Module:
    """ResNet-``depth`` with ``base_channels=width`` and the norm/activation
    of ``NORMS[norm]``; He init of convs, :math:`\\gamma` = ``gamma_init``,
    :math:`\\beta` = 0 (the backbone's default init, without its log)."""
    torch.manual_seed(seed)
    norm_cfg, act_cfg = NORMS[norm]
    net = _Net(CIFARResNet(depth, base_channels=width, norm_cfg=norm_cfg,
                           act_cfg=act_cfg, init_cfg=None))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                    nonlinearity='relu')
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.constant_(m.weight, gamma_init)
            nn.init.zeros_(m.bias)
    return net


def _measure(net, flops_map) -> Dict[str, float]:
    s = attach_flops(measure_model(net), flops_map).summary()
    return dict(collapsed=s['collapsed'], dead=s['dead'],
                sparsity=s['sparsity'])


def train_rounds(norm: str, rounds: Sequence[float], steps_per_round: int,
                 data, width: int = 8, batch_size: int = 64,
                 weight_decay: float = 5e-3, momentum: float = 0.9,
                 gamma_init: float = 1.0, seed: int = 0) -> List[dict]:
    """Cosine rounds with warm restarts: round ``k`` anneals the learning
    rate from ``rounds[k]`` to 0 over ``steps_per_round`` SGD steps
    (per-iteration cosine). Returns one row per round end (and one for the
    initial model, round 0): ``lr`` of the round, collapsed / dead shares,
    FLOPs sparsity, training accuracy and loss over the round's last
    quarter."""
    x, y = data
    net = build_net(norm, width=width, gamma_init=gamma_init, seed=seed)
    flops_map = channel_flops(net, x[:1])
    opt = torch.optim.SGD(net.parameters(), lr=rounds[0], momentum=momentum,
                          weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    rows = [dict(round=0, lr=0.0, acc=float('nan'), loss=float('nan'),
                 **_measure(net, flops_map))]
    perm, pos = torch.randperm(len(x), generator=gen), 0
    for k, lr_max in enumerate(rounds, 1):
        net.train()
        correct = seen = 0
        loss_sum = 0.0
        for t in range(steps_per_round):
            lr = 0.5 * lr_max * (1 + math.cos(math.pi * t / steps_per_round))
            for group in opt.param_groups:
                group['lr'] = lr
            if pos + batch_size > len(x):
                perm, pos = torch.randperm(len(x), generator=gen), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            out = net(x[idx])
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t >= 3 * steps_per_round // 4:
                correct += int((out.argmax(1) == y[idx]).sum())
                seen += len(idx)
                loss_sum += loss.item() * len(idx)
        rows.append(dict(round=k, lr=float(lr_max),
                         acc=correct / max(seen, 1),
                         loss=loss_sum / max(seen, 1),
                         **_measure(net, flops_map)))
    return rows
