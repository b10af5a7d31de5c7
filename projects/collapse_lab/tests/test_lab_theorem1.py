# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Theorem 1 (Zhou et al.

2020): the derived formula against Monte Carlo.
"""
import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from collapse_lab import load_settings, run_theorem1
from collapse_lab.theorem1 import (beta_averaged_j, j_of_r, mc_drop,
                                   predicted_drop)

K_SE = 4.0  # agreement within K_SE standard errors


@pytest.mark.parametrize('r', [-2.0, -0.7, 0.0, 0.3, 1.5])
def test_truncated_gaussian_moments_used_in_the_derivation(r):
    # H = 1{x > -r}: E[H], E[xH], E[x^2 H] by quadrature vs closed forms
    m = [
        integrate.quad(lambda x, k=k: x**k * norm.pdf(x), -r, np.inf)[0]
        for k in range(3)
    ]
    np.testing.assert_allclose(
        m,
        [norm.cdf(r), norm.pdf(r),
         norm.cdf(r) - r * norm.pdf(r)],
        rtol=1e-7,
        atol=1e-10)


def test_j_by_finite_differences_of_phi():
    # Rebuild E[dPhi] from numerical derivatives of Phi(beta/gamma) and the
    # step's second moments: an independent route to J.
    eta, c, h = 1.0, 1.0, 1e-4
    for gamma, beta in ((1.0, 0.3), (0.5, -0.4), (2.0, 1.0)):
        f = lambda g, b: norm.cdf(b / g)  # noqa: E731
        fgg = (f(gamma + h, beta) - 2 * f(gamma, beta) +
               f(gamma - h, beta)) / h**2
        fbb = (f(gamma, beta + h) - 2 * f(gamma, beta) +
               f(gamma, beta - h)) / h**2
        fgb = (f(gamma + h, beta + h) - f(gamma + h, beta - h) -
               f(gamma - h, beta + h) + f(gamma - h, beta - h)) / (4 * h**2)
        r = beta / gamma
        e_gg = norm.cdf(r) - r * norm.pdf(r)
        e_gb, e_bb = norm.pdf(r), norm.cdf(r)
        second = 0.5 * eta**2 * c**2 * (
            fgg * e_gg + 2 * fgb * e_gb + fbb * e_bb)
        np.testing.assert_allclose(
            second, predicted_drop(eta, c, gamma, beta), rtol=1e-4)
    assert j_of_r(0.0) == pytest.approx(-1 / np.pi)


@pytest.fixture(scope='module')
def study():
    return run_theorem1(load_settings('quick'))


def test_monte_carlo_agrees_with_formula_for_small_steps(study):
    small = [
        p for p in study['points'] if p['eta'] * p['c'] / p['gamma'] <= 0.02
    ]
    assert len(small) >= 30
    z = np.array([(p['mc'] - p['pred']) / p['se'] for p in small])
    assert np.all(np.abs(z) < K_SE), z
    # and the standard error is small enough for this to mean something:
    # a 5% error in J would show.
    rel_se = np.array([p['se'] / abs(p['pred']) for p in small])
    assert np.median(rel_se) < 0.05 / K_SE


def test_monte_carlo_detects_a_wrong_formula(study):
    # The same data reject a formula off by a factor 2 (e.g. a lost 1/2).
    small = [
        p for p in study['points']
        if p['eta'] * p['c'] / p['gamma'] <= 0.02 and p['r'] == 0.0
    ]
    wrong = [p['pred'] / 2 for p in small]  # J(0) off by a factor 2
    z = np.array([(p['mc'] - w) / p['se'] for p, w in zip(small, wrong)])
    assert np.all(np.abs(z) > K_SE)


def test_scaling_slopes(study):
    assert study['slopes']['eta'] == pytest.approx(2.0, abs=0.15)
    assert study['slopes']['c'] == pytest.approx(2.0, abs=0.15)
    assert study['slopes']['gamma'] == pytest.approx(-2.0, abs=0.15)


def test_beta_averaged_drop_is_negative_and_matches(study):
    for a in study['averaged']:
        assert a['pred'] < 0
        assert a['mc'] + 3 * a['se'] < 0, a
        assert abs(a['mc'] - a['pred']) < K_SE * a['se'], a
    for s in (0.1, 1.0, 10.0):
        assert beta_averaged_j(1.0, 'normal', s) < 0
        assert beta_averaged_j(1.0, 'uniform', s) < 0


def test_only_the_gradient_variance_matters():
    # Rademacher +-c has the same variance as N(0, c^2): same drop.
    mc = mc_drop(0.02, 1.0, 1.0, 0.5, n=200_000, seed=3, g_dist='rademacher')
    pred = predicted_drop(0.02, 1.0, 1.0, 0.5)
    assert abs(mc['mean'] - pred) < K_SE * mc['se']
