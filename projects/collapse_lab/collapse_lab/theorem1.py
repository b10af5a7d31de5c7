# Copyright (c) mmdet-psbn contributors. All rights reserved.
r"""Theorem 1 of Zhou et al. (2020), derived and checked by Monte Carlo.

The model: one BN + ReLU unit. The normalised input is
:math:`\hat x \sim N(0, 1)`, the pre-activation :math:`y = \gamma \hat x +
\beta` (here :math:`\gamma > 0`), and the upstream gradient :math:`g =
\partial L / \partial y` has mean 0 and variance :math:`c^2`, independent of
:math:`\hat x`. One SGD step on one sample with learning rate :math:`\eta`:

.. math::

    \Delta\gamma = -\eta\, \hat x\, g\, H, \qquad
    \Delta\beta  = -\eta\, g\, H, \qquad H = H(\gamma \hat x + \beta)

(:math:`H` the Heaviside step: the ReLU passes the gradient only where it
fires). The channel's activation probability is :math:`f(\gamma, \beta) =
\Phi(r)`, :math:`r = \beta / \gamma`.

**Derivation.** Expand :math:`f` to second order,

.. math::

    \Delta f = f_\gamma \Delta\gamma + f_\beta \Delta\beta
      + \tfrac12 \left(f_{\gamma\gamma} \Delta\gamma^2
      + 2 f_{\gamma\beta} \Delta\gamma \Delta\beta
      + f_{\beta\beta} \Delta\beta^2\right) + O(\eta^3).

The first-order term has expectation 0 because :math:`E[g] = 0` and
:math:`g` is independent of :math:`\hat x`. (If :math:`g` is symmetric the
third-order term vanishes too, so the error is :math:`O(\eta^4)`.) With
:math:`E[g^2] = c^2` and the truncated Gaussian moments
(:math:`H = 1\{\hat x > -r\}`; integrate by parts for the last)

.. math::

    E[H] = \Phi(r), \quad E[\hat x H] = \varphi(r), \quad
    E[\hat x^2 H] = \Phi(r) - r\varphi(r),

the second moments of the step are :math:`E[\Delta\beta^2] =
\eta^2 c^2 \Phi(r)`, :math:`E[\Delta\gamma\Delta\beta] = \eta^2 c^2
\varphi(r)`, :math:`E[\Delta\gamma^2] = \eta^2 c^2 (\Phi(r) - r\varphi(r))`.
The derivatives of :math:`f` (using :math:`\varphi'(r) = -r\varphi(r)`):

.. math::

    f_{\beta\beta} = -\frac{r\varphi(r)}{\gamma^2}, \quad
    f_{\gamma\beta} = \frac{(r^2 - 1)\varphi(r)}{\gamma^2}, \quad
    f_{\gamma\gamma} = \frac{r(2 - r^2)\varphi(r)}{\gamma^2}.

Collecting terms,

.. math::

    E[\Delta\Phi] = \frac{\eta^2 c^2}{2} \frac{1}{\gamma^2} J(r)
      + O(\eta^4), \qquad
    J(r) = \varphi(r)\left[r(1 - r^2)\Phi(r) + (r^4 - 2)\varphi(r)\right].

:math:`J(0) = -1/\pi`. The odd part of :math:`J`,
:math:`\varphi(r)\, r(1 - r^2)/2`, averages to 0 under an even
:math:`P(\beta)`; what is left is negative for every :math:`N(0, s^2)`
and uniform symmetric :math:`\beta` we tried (:func:`beta_averaged_j`),
and :math:`\int J\,dr \approx -0.776`. So the expected activation
probability drops, by an amount proportional to :math:`\eta^2` and
:math:`c^2` and to :math:`1/\gamma^2` at fixed :math:`r`.

The Monte Carlo below samples :math:`(\hat x, g)` and evaluates
:math:`\Phi((\beta + \Delta\beta) / |\gamma + \Delta\gamma|)` exactly, with
antithetic pairs :math:`(\hat x, g), (\hat x, -g)`: the pair mean is still
an unbiased estimate of :math:`E[\Delta\Phi]`, but the first-order noise
(of size :math:`\eta`) cancels, so the standard error is
:math:`O(\eta^2)` like the signal and small-:math:`\eta` checks are cheap.
"""
import math
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import integrate
from scipy.special import ndtr

__all__ = [
    'j_of_r', 'predicted_drop', 'beta_averaged_j', 'mc_drop', 'loglog_slope',
    'scaling_study'
]

_SQRT_2PI = math.sqrt(2 * math.pi)


def _pdf(r):
    return np.exp(-0.5 * np.square(r)) / _SQRT_2PI


def j_of_r(r):
    r""":math:`J(r) = \varphi(r)[r(1 - r^2)\Phi(r) + (r^4 - 2)\varphi(r)]`
    (see the module docstring), elementwise."""
    r = np.asarray(r, dtype=np.float64)
    phi = _pdf(r)
    return phi * (r * (1 - r * r) * ndtr(r) + (r**4 - 2) * phi)


def predicted_drop(eta, c, gamma, beta):
    r"""Second-order :math:`E[\Delta\Phi] = \eta^2 c^2 J(\beta/\gamma) /
    (2\gamma^2)`, for :math:`\gamma > 0`; broadcasts."""
    gamma = np.asarray(gamma, dtype=np.float64)
    return (np.square(eta) * np.square(c) / 2 / np.square(gamma) *
            j_of_r(np.asarray(beta) / gamma))


def beta_averaged_j(gamma: float, beta_dist: str, scale: float) -> float:
    r""":math:`E_\beta[J(\beta/\gamma)]` for an even :math:`P(\beta)`:

    ``'normal'`` (:math:`N(0, s^2)`) or ``'uniform'`` (:math:`U(-s, s)`),
    ``s = scale``.
    """
    s = scale / gamma  # the distribution of r = beta / gamma
    if beta_dist == 'normal':
        val, _ = integrate.quad(
            lambda r: j_of_r(r) * _pdf(r / s) / s,
            -12 * s,
            12 * s,
            limit=200,
            points=[0.0])
    elif beta_dist == 'uniform':
        val, _ = integrate.quad(
            lambda r: j_of_r(r) / (2 * s), -s, s, limit=200)
    else:
        raise ValueError(f"beta_dist must be 'normal' or 'uniform', got "
                         f'{beta_dist!r}')
    return float(val)


def mc_drop(eta: float,
            c: float,
            gamma: float,
            beta=0.0,
            n: int = 1_000_000,
            seed: int = 0,
            beta_dist: Optional[str] = None,
            beta_scale: float = 1.0,
            g_dist: str = 'normal',
            chunk: int = 1_000_000) -> Dict[str, float]:
    r"""Monte-Carlo :math:`E[\Delta\Phi]` of one SGD step of the unit.

    Args:
        eta, c, gamma: learning rate, gradient std, :math:`\gamma > 0`.
        beta (float): :math:`\beta` when ``beta_dist`` is None.
        n (int): Antithetic pairs.
        seed (int): numpy ``default_rng`` seed.
        beta_dist (str, optional): ``'normal'`` or ``'uniform'``: draw
            :math:`\beta` per sample (even, scale ``beta_scale``).
        g_dist (str): ``'normal'`` (:math:`N(0, c^2)`) or ``'rademacher'``
            (:math:`\pm c`): the formula needs only the mean and variance.

    Returns:
        dict: ``mean`` and its standard error ``se`` (from the spread of
        the pair means), ``n``.
    """
    if gamma <= 0:
        raise ValueError(f'gamma must be > 0, got {gamma!r}')
    rng = np.random.default_rng(seed)
    total, total_sq, done = 0.0, 0.0, 0
    while done < n:
        m = min(chunk, n - done)
        x = rng.standard_normal(m)
        if g_dist == 'normal':
            g = c * rng.standard_normal(m)
        elif g_dist == 'rademacher':
            g = c * (2.0 * rng.integers(0, 2, m) - 1.0)
        else:
            raise ValueError(f'unknown g_dist {g_dist!r}')
        if beta_dist is None:
            b = np.full(m, float(beta))
        elif beta_dist == 'normal':
            b = beta_scale * rng.standard_normal(m)
        elif beta_dist == 'uniform':
            b = rng.uniform(-beta_scale, beta_scale, m)
        else:
            raise ValueError(f'unknown beta_dist {beta_dist!r}')
        h = (gamma * x + b > 0).astype(np.float64)
        before = ndtr(b / gamma)
        pair = np.zeros(m)
        for sign in (1.0, -1.0):
            dg = -eta * x * sign * g * h
            db = -eta * sign * g * h
            pair += 0.5 * ndtr((b + db) / np.abs(gamma + dg))
        d = pair - before
        total += d.sum()
        total_sq += np.square(d).sum()
        done += m
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0)
    return dict(mean=float(mean), se=float(math.sqrt(var / n)), n=n)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log|y| against log x."""
    return float(
        np.polyfit(
            np.log(np.asarray(x, float)), np.log(np.abs(np.asarray(y, float))),
            1)[0])


def scaling_study(
    n: int = 400_000,
    seed: int = 0,
    etas=(0.005, 0.01, 0.02, 0.04, 0.08),
    cs=(0.25, 0.5, 1.0, 2.0),
    gammas=(0.5, 1.0, 2.0, 4.0),
    rs=(-1.5, -0.5, 0.0, 0.5, 1.5),
    base=dict(eta=0.02, c=1.0, gamma=1.0),
    beta_scales=(0.25, 0.5, 1.0, 2.0)
) -> dict:
    r"""The numbers behind the Theorem-1 figure and test.

    - ``points``: MC vs formula over a grid of :math:`r` crossed with each
      swept variable (the others at ``base``); :math:`\gamma` is swept at
      fixed :math:`r`, i.e. :math:`\beta = r\gamma`.
    - ``slopes``: log-log slopes of the MC drop against :math:`\eta`,
      :math:`c`, :math:`\gamma` at :math:`r = 0` (predicted 2, 2, -2).
    - ``averaged``: :math:`\beta \sim N(0, s^2)` and :math:`U(-s, s)`:
      the MC drop beside :math:`\eta^2 c^2 E_\beta[J]/(2\gamma^2)`.
    """
    points, slopes, k = [], {}, 0
    sweeps = dict(eta=etas, c=cs, gamma=gammas)
    for var, values in sweeps.items():
        for r in rs:
            for v in values:
                p = dict(base)
                p[var] = v
                k += 1
                mc = mc_drop(
                    p['eta'],
                    p['c'],
                    p['gamma'],
                    r * p['gamma'],
                    n=n,
                    seed=seed + k)
                pred = float(
                    predicted_drop(p['eta'], p['c'], p['gamma'],
                                   r * p['gamma']))
                points.append(
                    dict(
                        sweep=var,
                        r=r,
                        **p,
                        mc=mc['mean'],
                        se=mc['se'],
                        pred=pred))
        at0 = [q for q in points if q['sweep'] == var and q['r'] == 0.0]
        slopes[var] = loglog_slope([q[var] for q in at0],
                                   [q['mc'] for q in at0])
    averaged = []
    for dist in ('normal', 'uniform'):
        for s in beta_scales:
            k += 1
            mc = mc_drop(
                base['eta'],
                base['c'],
                base['gamma'],
                n=n,
                seed=seed + k,
                beta_dist=dist,
                beta_scale=s)
            pred = (
                base['eta']**2 * base['c']**2 / 2 / base['gamma']**2 *
                beta_averaged_j(base['gamma'], dist, s))
            averaged.append(
                dict(
                    dist=dist, scale=s, mc=mc['mean'], se=mc['se'], pred=pred))
    return dict(
        points=points,
        slopes=slopes,
        averaged=averaged,
        base=dict(base),
        n=n,
        seed=seed)
