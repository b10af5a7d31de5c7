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

Other optimizers (docs/optimizers.md derives each law): with zero data
gradient every coordinate of a dead channel moves by its optimizer's
recursion on the decay alone, :func:`decay_only_trajectory`.

- SGD with momentum :math:`\mu` and AdamW (decoupled decay, zero Adam
  step) are linear and the same for every coordinate, so
  :math:`\theta_t = \theta_0 s_t` (:func:`decay_scale`, closed forms) and
  the law above holds with :math:`q^t` replaced by :math:`s_t`: BN's ratio is
  constant, psBN's grows. SGD with momentum: :math:`s_t = A r_1^t +
  (1-A) r_2^t`, :math:`r_1 \approx 1 - \eta\lambda/(1-\mu)`; AdamW:
  :math:`s_t = (1-\eta\lambda)^t`.
- Adam with L2 decay feeds :math:`g = \lambda\theta` through
  :math:`\hat m/\sqrt{\hat v}`, which does not depend on :math:`\lambda`
  (while :math:`|g| \gg \epsilon`): each coordinate walks towards 0 by at
  most about :math:`\eta` per step, :math:`\gamma` and :math:`\beta`
  independently, so the ratio is not preserved; :func:`adam_linear_step`
  is the linear (lower-bound) estimate of psBN's revival.
"""
import math
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d

__all__ = [
    'law_ratio', 'predicted_recovery_step', 'simulate_dead_channels',
    'decay_scale', 'decay_only_trajectory', 'first_fire', 'adam_linear_step',
    'ratio_from_scale'
]

OPTIMIZERS = ('sgd', 'adam', 'adamw')


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


def decay_scale(optimizer: str,
                eta: float,
                lam: float,
                steps: int,
                momentum: float = 0.0) -> np.ndarray:
    r""":math:`s_t`, ``t = 0..steps``, with :math:`\theta_t = \theta_0 s_t` for
    a coordinate whose only gradient is the decay's, by closed form.

    - ``'sgd'``: torch's SGD (its first step sets the momentum buffer to
      the gradient): :math:`\theta_{t+1} = (1+\mu-\eta\lambda)\theta_t -
      \mu\theta_{t-1}`, :math:`\theta_1 = (1-\eta\lambda)\theta_0`, so
      :math:`s_t = A r_1^t + (1-A) r_2^t` with :math:`r_{1,2}` the roots of
      :math:`r^2 - (1+\mu-\eta\lambda) r + \mu` and
      :math:`A = (1-\eta\lambda-r_2)/(r_1-r_2)`; :math:`\mu = 0` gives
      :math:`q^t`.
    - ``'adamw'``: :math:`(1-\eta\lambda)^t` (zero gradient from the
      start: Adam's moments stay 0 and its step is 0).

    Adam with L2 decay is not linear in :math:`\theta_0`: see
    :func:`decay_only_trajectory`.
    """
    t = np.arange(steps + 1, dtype=np.float64)
    q = 1.0 - eta * lam
    if optimizer == 'adamw' or (optimizer == 'sgd' and momentum == 0):
        return np.power(q, t)
    if optimizer != 'sgd':
        raise ValueError(f'decay_scale: {optimizer!r} is not linear; use '
                         'decay_only_trajectory')
    b, mu = 1.0 + momentum - eta * lam, momentum
    disc = complex(b * b - 4 * mu)**0.5
    r1, r2 = (b + disc) / 2, (b - disc) / 2
    a = (q - r2) / (r1 - r2)
    return np.real(a * r1**t + (1 - a) * r2**t)


def ratio_from_scale(c0: float, gamma0: float, alpha: float,
                     s: np.ndarray) -> np.ndarray:
    r"""psBN's :math:`C_t = C_0 + \frac{\alpha}{|\gamma_0|}(1/s_t - 1)`
    when :math:`\gamma` and :math:`\beta` both scale by :math:`s_t`
    (``alpha=0``: BN's constant ratio)."""
    return c0 + alpha / abs(gamma0) * (1.0 / np.asarray(s) - 1.0)


def decay_only_trajectory(theta0,
                          optimizer: str,
                          eta: float,
                          lam: float,
                          steps: int,
                          momentum: float = 0.0,
                          betas=(0.9, 0.999),
                          eps: float = 1e-8) -> np.ndarray:
    r"""Each coordinate of ``theta0`` moved ``steps`` times by torch's update
    rule with zero data gradient (float64 recursion, ``(steps + 1, n)``).

    The law of every optimizer: exact for the real layers as long as
    the channel is dead. ``'adam'`` is ``torch.optim.Adam`` with
    ``weight_decay=lam`` (:math:`g = \lambda\theta` through the moments),
    ``'adamw'`` the decoupled decay then Adam's step of a zero gradient,
    ``'sgd'`` SGD with ``momentum``.
    """
    th = np.array(theta0, dtype=np.float64).reshape(-1)
    out = np.empty((steps + 1, th.size))
    out[0] = th
    if optimizer in ('sgd', 'adamw'):
        return np.outer(decay_scale(optimizer, eta, lam, steps, momentum), th)
    if optimizer != 'adam':
        raise ValueError(
            f'unknown optimizer {optimizer!r}; known: {OPTIMIZERS}')
    b1, b2 = betas
    m, v = np.zeros_like(th), np.zeros_like(th)
    for t in range(1, steps + 1):
        g = lam * th
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        th = th - eta / (1 - b1**t) * m / denom
        out[t] = th
    return out


def first_fire(gamma: np.ndarray,
               beta: np.ndarray,
               shift: float,
               x_hat_max,
               x_hat_min,
               tol: float = 0.0) -> np.ndarray:
    r"""First row ``t`` at which :math:`\gamma_t \hat x + \beta_t +` ``shift``
    exceeds ``tol`` for some :math:`\hat x` of the batch (``-1``: never), per
    channel (column)."""
    top = beta + shift + np.maximum(gamma * np.asarray(x_hat_max),
                                    gamma * np.asarray(x_hat_min))
    fired = top > tol
    return np.where(fired.any(0), fired.argmax(0), -1)


def adam_linear_step(gamma0: float, beta0: float, shift: float,
                     x_hat_max: float, eta: float) -> float:
    r"""Revival step under Adam + L2 if each coordinate moved by exactly
    :math:`\eta` per step towards 0 (the first steps' size).

    It is the first step :math:`t` at which :math:`\beta_t + s + m|\gamma_t|`
    is positive (:math:`s` the shift, :math:`m = \max \hat x`), with
    :math:`|\gamma_t| = \max(0, |\gamma_0| - \eta t)` and
    :math:`\beta_t = \beta_0 + \eta t` (:math:`\beta_0 < 0`).

    A lower bound when :math:`|g|` only decreases (the steps shrink with
    :math:`\sqrt{\hat v}` lagging); ``inf`` if it never fires (BN:
    shift 0, then :math:`\beta` and :math:`\gamma` reach 0 together at
    best).
    """
    g0 = abs(gamma0)
    f0 = beta0 + shift + g0 * x_hat_max
    if f0 > 0:
        return 0
    if shift <= 0:  # beta_t + |gamma_t| max x_hat <= 0 until both are 0
        return math.inf
    t_star = -(beta0 + shift) / eta  # once gamma is 0
    if x_hat_max < 1 and -f0 / (1 - x_hat_max) <= g0:
        t_star = -f0 / (eta * (1 - x_hat_max))  # while gamma shrinks
    return float(math.floor(t_star) + 1)


def simulate_dead_channels(gamma0: Sequence[float],
                           c0: float,
                           alpha: float = 0.1,
                           eta: float = 0.1,
                           lam: float = 5e-4,
                           steps: int = 5000,
                           batch_shape=(16, 4, 4),
                           seed: int = 0,
                           optimizer: str = 'sgd',
                           momentum: float = 0.0,
                           fire_tol: float = 0.0) -> Dict[str, np.ndarray]:
    r"""Train BN and psBN, one channel per ``gamma0``, each from ratio ``c0``,
    + ReLU with ``optimizer`` (``'sgd'``: ``torch.optim.SGD(lr=eta,
    momentum=momentum, weight_decay=lam)``; ``'adam'``, ``'adamw'``: torch's
    with ``lr=eta, weight_decay=lam``) on a fixed batch, loss
    ``relu(layer(x)).sum()``.

    float64 throughout. Returns per kind (``'BN'``, ``'psBN'``) the ratio
    :math:`C_t` before each step (``steps`` x channels), :math:`\gamma_t`
    and :math:`\beta_t` (``steps + 1`` rows), the first step at which each
    channel fired (an output > ``fire_tol``; ``-1``: never), whether the
    data gradient was exactly 0 at every step before it, and the batch's
    largest and smallest :math:`\hat x` per channel (the firing threshold
    is the negative of the largest).
    """
    gamma0 = np.asarray(gamma0, dtype=np.float64)
    ch = len(gamma0)
    n, h, w = batch_shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ch, h, w, dtype=torch.float64, generator=gen)
    x_hat = F.batch_norm(x, None, None, training=True)
    x_hat_max = x_hat.amax(dim=(0, 2, 3)).numpy()
    out = dict(x_hat_max=x_hat_max, x_hat_min=x_hat.amin((0, 2, 3)).numpy())
    for kind in ('BN', 'psBN'):
        layer = (PostShiftedBatchNorm2d(ch, alpha=alpha)
                 if kind == 'psBN' else nn.BatchNorm2d(ch)).double()
        shift = alpha if kind == 'psBN' else 0.0
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(gamma0))
            layer.bias.copy_(torch.from_numpy(c0 * np.abs(gamma0) - shift))
        if optimizer == 'sgd':
            opt = torch.optim.SGD(
                layer.parameters(),
                lr=eta,
                momentum=momentum,
                weight_decay=lam)
        elif optimizer in ('adam', 'adamw'):
            opt = dict(
                adam=torch.optim.Adam, adamw=torch.optim.AdamW)[optimizer](
                    layer.parameters(), lr=eta, weight_decay=lam)
        else:
            raise ValueError(
                f'unknown optimizer {optimizer!r}; known: {OPTIMIZERS}')
        ratios = np.empty((steps, ch))
        params = np.empty((2, steps + 1, ch))
        first = np.full(ch, -1, dtype=np.int64)
        zero_grad_while_dead = np.ones(ch, dtype=bool)
        for t in range(steps):
            with torch.no_grad():
                ratios[t] = ((layer.bias + shift) / layer.weight.abs()).numpy()
                params[:, t] = (layer.weight.numpy(), layer.bias.numpy())
            y = F.relu(layer(x))
            fired = (y > fire_tol).flatten(2).any(-1).any(0).numpy()
            first[(first < 0) & fired] = t
            opt.zero_grad()
            y.sum().backward()
            dead = first < 0
            g = (layer.weight.grad.abs() + layer.bias.grad.abs()).numpy()
            zero_grad_while_dead &= ~(dead & (g != 0))
            opt.step()
        with torch.no_grad():
            params[:, steps] = (layer.weight.numpy(), layer.bias.numpy())
        out[kind] = dict(
            ratio=ratios,
            gamma=params[0],
            beta=params[1],
            first_fired=first,
            zero_grad_while_dead=zero_grad_while_dead)
    return out
