# Copyright (c) mmdet-psbn contributors. All rights reserved.
r"""The weight-decay recovery law (paper §5), simulated with the real layers.

A channel starts dead: :math:`C_0 = (\beta_0 + \alpha)/|\gamma_0| \ll 0`,
so behind the ReLU it gets no data gradient, and plain SGD (learning rate
:math:`\eta`, weight decay :math:`\lambda`, no momentum) only scales
:math:`\gamma` and :math:`\beta` by :math:`q = 1 - \eta\lambda` per step.

- BN (:math:`\alpha = 0`): :math:`C_t = \beta_t/|\gamma_t| = C_0` forever.
- psBN: :math:`C_{t+1} = C_t + \frac{\eta\lambda}{1-\eta\lambda}
  \frac{\alpha}{|\gamma_t|}`, with :math:`|\gamma_t| = |\gamma_0| q^t`,
  which sums to the closed form

  .. math::

      C_t = C_0 + \frac{\alpha}{|\gamma_0|}\left(q^{-t} - 1\right).

The channel fires again (on a given batch) at the first :math:`t` with
:math:`C_t > -\max \hat x`, the batch's largest normalised input; in
population terms it leaves the dead region of
:mod:`mmdet_psbn.analysis.collapse` when :math:`\Phi(C_t) \ge` 1e-3.
"""
import math
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d

__all__ = ['law_ratio', 'predicted_recovery_step', 'simulate_dead_channels']


def law_ratio(c0, gamma0: float, alpha: float, eta: float, lam: float,
              steps: int) -> np.ndarray:
    r""":math:`C_t` for ``t = 0..steps`` by the closed form above (BN:

    ``alpha=0``, constant).
    """
    q = 1.0 - eta * lam
    t = np.arange(steps + 1, dtype=np.float64)
    return c0 + alpha / abs(gamma0) * (np.power(q, -t) - 1.0)


def predicted_recovery_step(c0: float, gamma0: float, alpha: float, eta: float,
                            lam: float, threshold: float) -> int:
    """First ``t`` with :math:`C_t >` ``threshold`` by the law (a float ``inf``
    if never, e.g. BN)."""
    if c0 > threshold:
        return 0
    if alpha <= 0:
        return math.inf
    q = 1.0 - eta * lam
    # C_t > thr  <=>  q^-t > 1 + (thr - c0)|gamma0|/alpha
    t = math.log1p((threshold - c0) * abs(gamma0) / alpha) / -math.log(q)
    step = math.floor(t) + 1 if t == math.floor(t) else math.ceil(t)
    return int(step)


def simulate_dead_channels(gamma0: Sequence[float],
                           c0: float,
                           alpha: float = 0.1,
                           eta: float = 0.1,
                           lam: float = 5e-4,
                           steps: int = 5000,
                           batch_shape=(16, 4, 4),
                           seed: int = 0) -> Dict[str, np.ndarray]:
    r"""Train BN and psBN, one channel per ``gamma0``, each from ratio ``c0``,
    + ReLU with ``torch.optim.SGD(lr=eta, weight_decay=lam)`` on
    a fixed batch, loss ``relu(layer(x)).sum()``.

    float64 throughout. Returns per kind (``'BN'``, ``'psBN'``) the ratio
    :math:`C_t` before each step (``steps`` x channels), the first step at
    which each channel fired (``-1``: never), whether the data gradient
    was exactly 0 at every step before it, and the batch's largest
    :math:`\hat x` per channel (the firing threshold is its negative).
    """
    gamma0 = np.asarray(gamma0, dtype=np.float64)
    ch = len(gamma0)
    n, h, w = batch_shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ch, h, w, dtype=torch.float64, generator=gen)
    x_hat_max = F.batch_norm(
        x, None, None, training=True).amax(dim=(0, 2, 3)).numpy()
    out = dict(x_hat_max=x_hat_max)
    for kind in ('BN', 'psBN'):
        layer = (PostShiftedBatchNorm2d(ch, alpha=alpha)
                 if kind == 'psBN' else nn.BatchNorm2d(ch)).double()
        shift = alpha if kind == 'psBN' else 0.0
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(gamma0))
            layer.bias.copy_(torch.from_numpy(c0 * np.abs(gamma0) - shift))
        opt = torch.optim.SGD(layer.parameters(), lr=eta, weight_decay=lam)
        ratios = np.empty((steps, ch))
        first = np.full(ch, -1, dtype=np.int64)
        zero_grad_while_dead = np.ones(ch, dtype=bool)
        for t in range(steps):
            with torch.no_grad():
                ratios[t] = ((layer.bias + shift) / layer.weight.abs()).numpy()
            y = F.relu(layer(x))
            fired = (y > 0).flatten(2).any(-1).any(0).numpy()
            first[(first < 0) & fired] = t
            opt.zero_grad()
            y.sum().backward()
            dead = first < 0
            g = (layer.weight.grad.abs() + layer.bias.grad.abs()).numpy()
            zero_grad_while_dead &= ~(dead & (g != 0))
            opt.step()
        out[kind] = dict(
            ratio=ratios,
            first_fired=first,
            zero_grad_while_dead=zero_grad_while_dead)
    return out
