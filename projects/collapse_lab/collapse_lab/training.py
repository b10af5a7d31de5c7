# Copyright (c) mmdet-psbn contributors. All rights reserved.
r"""Filter collapse in training, at CPU scale, on real digits and (paper §3.3)
on random labels.

The paper trains CIFAR ResNets for 9 x 100 epochs; here the same
:class:`~psbn_cifar.models.CIFARResNet` (depth 20, narrowed by
``base_channels``) trains for a few short cosine rounds in a plain PyTorch
loop (many tiny runs; the Runner's overhead would dominate), on

- **real digits** (:func:`load_digits`): the 4,000 training and 1,000 test
  MNIST digits of :func:`~mmdet_psbn.datasets.mnist_digits.load_mnist_digits`,
  average-pooled 28x28 -> 14x14 and repeated to 3 channels. The networks
  learn them (test accuracy is reported beside every collapse measure);
- **random labels** (:func:`load_toy_cifar`, paper §3.3): the toy
  CIFAR-format images of :func:`~psbn_cifar.datasets.make_toy_cifar` with
  random labels, where collapse appears although nothing can be learnt.

Scale notes (what differs from the paper, on purpose): weight decay is
larger than the paper's 5e-4, so that a dead channel's :math:`\gamma`, which
decays like :math:`(1 - \eta\lambda/(1-\mu))^t`, reaches the collapse
threshold |γ| < 1e-3 within a few hundred steps; only the product
:math:`\eta\lambda t` matters for that decay, and the docs state it.

Every round end is measured by :func:`measure` (see there): collapsed,
dead (parameters), inactive (activations on a held-out probe batch) and
FLOPs sparsity, with train and test accuracy in eval mode.
"""
import math
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_psbn.analysis.collapse import (ActivationProbe, attach_flops,
                                          measure_model)
from mmdet_psbn.analysis.flops import channel_flops
from mmdet_psbn.datasets.mnist_digits import load_mnist_digits
from mmdet_psbn.models.layers import convert_to_psbn
from psbn_cifar.datasets.cifar import (load_cifar_split, make_toy_cifar,
                                       random_labels)
from psbn_cifar.models import CIFARResNet

__all__ = [
    'NORMS', 'OPTIMIZERS', 'load_digits', 'load_toy_cifar', 'build_net',
    'make_optimizer', 'measure', 'train_rounds', 'pretrain', 'finetune',
    'early_curve'
]

_RELU = dict(type='ReLU', inplace=True)
_LRELU = dict(type='LeakyReLU', negative_slope=0.01, inplace=True)
# name -> (norm_cfg, act_cfg). 'psBN-rect' is psBN only where a rectifier
# follows (stem and the first BN of each block); the last BN of each
# residual branch, which feeds the addition, stays plain BN.
NORMS = {
    'BN': (dict(type='BN'), _RELU),
    'BN+LReLU': (dict(type='BN'), _LRELU),
    'psBN': (dict(type='psBN'), _RELU),
    'psBN-rect': (dict(type='BN'), _RELU),
}
ALPHA = 0.1  # the psBN post-shift unless a caller passes another
# optimizer name -> how its weight decay acts (docs/optimizers.md)
OPTIMIZERS = {
    'sgd': 'SGD with momentum, L2 weight decay added to the gradient',
    'adam': 'Adam, L2 weight decay added to the gradient (coupled)',
    'adamw': 'AdamW, decoupled weight decay',
}


def make_optimizer(params,
                   optimizer: str,
                   lr: float,
                   weight_decay: float,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """``torch.optim`` optimizer ``optimizer`` (a key of
    :data:`OPTIMIZERS`) with torch's defaults otherwise (Adam's betas (0.9,
    0.999), eps 1e-8; ``momentum`` is SGD's only)."""
    if optimizer == 'sgd':
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == 'adam':
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == 'adamw':
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise KeyError(f'unknown optimizer {optimizer!r}; known: '
                   f'{sorted(OPTIMIZERS)}')


# ------------------------------------------------------------------ data
def load_digits(size: int = 14, num_train: Optional[int] = None):
    """Real digits as ``dict(train=(x, y), test=(x, y))``: float ``(N, 3, size,
    size)`` normalised with the training set's mean and std, int64 labels.

    The training digits are in a fixed shuffled order;
    ``num_train`` keeps the first ``num_train`` (all 4,000 by default).
    """
    out, stats = {}, None
    for split in ('train', 'test'):
        img, lab = load_mnist_digits(split)
        x = torch.from_numpy(np.array(img, dtype=np.float32) / 255.)[:, None]
        if size != 28:
            x = F.adaptive_avg_pool2d(x, size)
        if stats is None:
            stats = (x.mean(), x.std())
        x = ((x - stats[0]) / stats[1]).expand(-1, 3, -1, -1).contiguous()
        out[split] = (x, torch.as_tensor(np.array(lab), dtype=torch.long))
    # the file is sorted by class: one fixed shuffle, so that any prefix
    # (the 1,000 digits of the training accuracy) has every class
    idx = torch.randperm(
        len(out['train'][0]), generator=torch.Generator().manual_seed(0))
    idx = idx[:num_train]
    out['train'] = (out['train'][0][idx], out['train'][1][idx])
    return out


def load_toy_cifar(num_train: int = 512,
                   seed: int = 0,
                   size: int = 16,
                   random_label: bool = True,
                   label_seed: int = 0):
    """The toy CIFAR-format training set as ``dict(train=(x, y))``: written by
    :func:`make_toy_cifar` into a temporary folder, read back by
    :func:`load_cifar_split` (as the official archive is read), normalised per
    channel and pooled to ``size``; random labels by default (paper §3.3)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_toy_cifar(
            osp.join(tmp, 'cifar'),
            num_train=num_train,
            num_test=10,
            seed=seed)
        images, labels, _ = load_cifar_split(root)
    # (N, 32, 32, 3) uint8 -> contiguous (N, 3, 32, 32) float
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float()
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    if size != 32:
        x = F.adaptive_avg_pool2d(x, size)
    y = (
        random_labels(len(labels), 10, label_seed)
        if random_label else np.asarray(labels))
    return dict(train=(x.contiguous(), torch.as_tensor(y, dtype=torch.long)))


# ------------------------------------------------------------------ model
class _Net(nn.Module):
    """CIFARResNet + global average pooling + linear classifier."""

    def __init__(self, backbone: nn.Module, num_classes: int = 10):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


def _psbn_before_rectifiers(net: nn.Module, alpha: float) -> None:
    """'psBN-rect': the stem BN and each block's first BN become psBN."""
    bb = net.backbone
    bb.add_module(bb.norm1_name, convert_to_psbn(bb.norm1, alpha))
    for name in bb.res_layers:
        for block in getattr(bb, name):
            block.add_module(block.norm1_name,
                             convert_to_psbn(block.norm1, alpha))


def build_net(norm: str,
              width: int = 8,
              depth: int = 20,
              gamma_init: float = 1.0,
              seed: int = 0,
              alpha: float = ALPHA) -> nn.Module:
    """ResNet-``depth`` with ``base_channels=width`` and the norm/activation of
    ``NORMS[norm]`` (psBN with post-shift ``alpha``); He init of convs,
    :math:`\\gamma` = ``gamma_init``, :math:`\\beta` = 0 (the backbone's
    default init, without its log)."""
    if norm not in NORMS:
        raise KeyError(f'unknown norm {norm!r}; known: {sorted(NORMS)}')
    torch.manual_seed(seed)
    norm_cfg, act_cfg = NORMS[norm]
    if norm == 'psBN':
        norm_cfg = dict(norm_cfg, alpha=alpha)
    net = _Net(
        CIFARResNet(
            depth,
            base_channels=width,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            init_cfg=None))
    if norm == 'psBN-rect':
        _psbn_before_rectifiers(net, alpha)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(
                m.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.constant_(m.weight, gamma_init)
            nn.init.zeros_(m.bias)
    return net


def _to_norm(net: nn.Module, norm: str, alpha: float = ALPHA) -> nn.Module:
    """A (BN, ReLU) network as ``norm`` for finetuning, keeping its function
    in eval mode (psBN: bias := bias - alpha, see ``convert_to_psbn``;
    LeakyReLU: the ReLUs are swapped, which changes negative outputs by 1 %).
    """
    if norm in ('psBN', 'psBN-rect'):
        if norm == 'psBN':
            convert_to_psbn(net, alpha)
        else:
            _psbn_before_rectifiers(net, alpha)
    elif norm == 'BN+LReLU':
        for mod in list(net.modules()):
            for name, child in mod.named_children():
                if isinstance(child, nn.ReLU):
                    mod.add_module(name, nn.LeakyReLU(0.01, inplace=True))
    elif norm != 'BN':
        raise KeyError(f'unknown norm {norm!r}; known: {sorted(NORMS)}')
    return net


# ------------------------------------------------------------------ measures
@torch.no_grad()
def accuracy(net: nn.Module,
             x: torch.Tensor,
             y: torch.Tensor,
             batch: int = 500) -> float:
    """Top-1 accuracy in eval mode (running statistics)."""
    was = net.training
    net.eval()
    correct = sum(
        int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
        for i in range(0, len(x), batch))
    net.train(was)
    return correct / len(x)


def measure(net: nn.Module,
            flops_map,
            probe_x: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """The collapse measures of ``net`` (:mod:`mmdet_psbn.analysis.collapse`),
    as shares in [0, 1]:

    - ``collapsed``: |γ| < 1e-3, of all norm channels;
    - ``dead``: Φ((β+α)/|γ|) < 1e-3, of the *rectified* channels only (a
      norm layer whose output goes into a ReLU/LeakyReLU first,
      ``flops_map.rectified``; the last BN of a residual branch feeds the
      addition and cannot be dead);
    - ``dead_all``: the same test over all channels (the lab's measure
      before the rectified ones were told apart), for comparison, and
      ``dead_residual`` over the channels that are not rectified;
    - ``inactive`` (with ``probe_x``): rectified channels whose output is
      <= 0 at every position of every image of ``probe_x``, run in **eval
      mode** (running statistics: the deployed network; Mehta et al.'s
      activation-based measure);
    - ``sparsity``: the share of conv FLOPs the collapsed channels remove.

    No model here has zero-init layers, so no ``previous`` measurement is
    passed on.
    """
    stats = attach_flops(measure_model(net), flops_map)
    if probe_x is not None:
        was = net.training
        net.eval()
        with torch.no_grad(), ActivationProbe(
                net, flops_map.rectified_layers) as probe:
            net(probe_x)
        net.train(was)
        stats.attach_inactive(probe.inactive)
    s = stats.summary()
    out = {
        k: float(s[k])
        for k in ('collapsed', 'dead', 'inactive', 'sparsity') if k in s
    }
    rect = np.repeat(stats.rectified, np.diff(stats.offsets))
    out['dead_all'] = float(stats.dead.mean())
    out['dead_residual'] = (
        float(stats.dead[~rect].mean()) if (~rect).any() else 0.0)
    return out


# ------------------------------------------------------------------ training
def _row(net, flops_map, data, probe_n, **kw) -> dict:
    row = dict(kw)
    test = data.get('test')
    row.update(
        measure(net, flops_map, None if test is None else test[0][:probe_n]))
    x, y = data['train']
    row['train_acc'] = accuracy(net, x[:1000], y[:1000])
    if test is not None:
        row['test_acc'] = accuracy(net, *test)
    return row


def _run(net,
         rounds,
         steps_per_round,
         data,
         batch_size,
         weight_decay,
         momentum,
         seed,
         probe_n,
         first_round=1,
         warmup=0,
         optimizer='sgd') -> List[dict]:
    """Cosine rounds with warm restarts on ``net``: round ``k`` anneals the
    learning rate from ``rounds[k]`` to 0 over ``steps_per_round`` SGD steps
    (per-iteration cosine; a linear warm-up over the first ``warmup`` steps of
    the first round) with ``optimizer`` (see :func:`make_optimizer`).

    One measured row per round end.
    """
    x, y = data['train']
    flops_map = channel_flops(net, x[:1])
    opt = make_optimizer(net.parameters(), optimizer, rounds[0], weight_decay,
                         momentum)
    gen = torch.Generator().manual_seed(seed)
    perm, pos, rows = torch.randperm(len(x), generator=gen), 0, []
    for k, lr_max in enumerate(rounds):
        net.train()
        loss_sum = 0.0
        for t in range(steps_per_round):
            lr = 0.5 * lr_max * (1 + math.cos(math.pi * t / steps_per_round))
            if k == 0 and t < warmup:
                lr *= (t + 1) / warmup
            for group in opt.param_groups:
                group['lr'] = lr
            if pos + batch_size > len(x):
                perm, pos = torch.randperm(len(x), generator=gen), 0
            idx = perm[pos:pos + batch_size]
            pos += batch_size
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
        rows.append(
            _row(
                net,
                flops_map,
                data,
                probe_n,
                round=first_round + k,
                lr=float(lr_max),
                loss=loss_sum / steps_per_round))
    return rows


def train_rounds(norm: str,
                 rounds: Sequence[float],
                 steps_per_round: int,
                 data,
                 width: int = 8,
                 batch_size: int = 64,
                 weight_decay: float = 5e-3,
                 momentum: float = 0.9,
                 gamma_init: float = 1.0,
                 seed: int = 0,
                 probe_n: int = 256,
                 alpha: float = ALPHA) -> List[dict]:
    """A fresh ``norm`` network trained by cosine rounds with warm restarts
    (see :func:`_run`).

    ``data``: ``dict(train=(x, y)[, test=(x, y)])``.
    Returns one row per round end and one for the initial model (round 0):
    ``lr`` of the round, the measures of :func:`measure`, ``train_acc`` (eval
    mode, the first 1,000 training images), ``test_acc`` when there is a
    test set, and the round's mean training ``loss``.
    """
    net = build_net(
        norm, width=width, gamma_init=gamma_init, seed=seed, alpha=alpha)
    flops_map = channel_flops(net, data['train'][0][:1])
    rows = [
        _row(
            net, flops_map, data, probe_n, round=0, lr=0.0, loss=float('nan'))
    ]
    return rows + _run(net, rounds, steps_per_round, data, batch_size,
                       weight_decay, momentum, seed, probe_n)


def pretrain(rounds: Sequence[float],
             steps_per_round: int,
             data,
             width: int = 8,
             batch_size: int = 64,
             weight_decay: float = 5e-4,
             momentum: float = 0.9,
             seed: int = 0) -> dict:
    """A BN + ReLU network trained at a low learning rate: the "pretrained"
    model of :func:`finetune`.

    Returns its state dict.
    """
    net = build_net('BN', width=width, seed=seed)
    _run(
        net,
        rounds,
        steps_per_round,
        data,
        batch_size,
        weight_decay,
        momentum,
        seed,
        probe_n=0)
    return net.state_dict()


def finetune(norm: str,
             state: dict,
             rounds: Sequence[float],
             steps_per_round: int,
             data,
             width: int = 8,
             batch_size: int = 64,
             weight_decay: float = 5e-3,
             momentum: float = 0.9,
             seed: int = 0,
             probe_n: int = 256,
             alpha: float = ALPHA,
             optimizer: str = 'sgd') -> List[dict]:
    """Finetuning, as in detection: the pretrained BN network ``state``
    converted to ``norm`` (function-preserving, see :func:`_to_norm`), a new
    classifier, and cosine rounds at a (much) higher learning rate, with
    ``optimizer`` (:func:`make_optimizer`; ``momentum`` is SGD's only).

    Row 0 is the converted pretrained model (with its own head).
    """
    net = build_net('BN', width=width, seed=seed)
    net.load_state_dict(state)
    _to_norm(net, norm, alpha)
    flops_map = channel_flops(net, data['train'][0][:1])
    rows = [
        _row(
            net, flops_map, data, probe_n, round=0, lr=0.0, loss=float('nan'))
    ]
    torch.manual_seed(1000 + seed)
    net.fc.reset_parameters()
    return rows + _run(
        net,
        rounds,
        steps_per_round,
        data,
        batch_size,
        weight_decay,
        momentum,
        seed,
        probe_n,
        optimizer=optimizer)


def early_curve(norm: str,
                lr: float,
                iters: Sequence[int],
                data,
                width: int = 8,
                batch_size: int = 16,
                weight_decay: float = 5e-4,
                momentum: float = 0.9,
                seed: int = 0,
                alpha: float = ALPHA) -> List[dict]:
    """From-scratch training at a constant ``lr`` (no warm-up, like
    mmpretrain's CIFAR schedule), test accuracy (eval mode) after each number
    of iterations in ``iters``."""
    net = build_net(norm, width=width, seed=seed, alpha=alpha)
    x, y = data['train']
    opt = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    rows, done = [], 0
    for n in sorted(iters):
        net.train()
        for _ in range(n - done):
            idx = torch.randint(len(x), (batch_size, ), generator=gen)
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        done = n
        rows.append(
            dict(
                iters=n,
                test_acc=accuracy(net, *data['test']),
                loss=loss.item()))
    return rows
