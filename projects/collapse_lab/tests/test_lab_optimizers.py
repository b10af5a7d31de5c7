# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""A dead channel under SGD with momentum, Adam + L2 and AdamW: the real layers
and torch's optimizers against the laws of docs/optimizers.md."""
import numpy as np
import pytest

from collapse_lab import load_settings
from collapse_lab.recovery import (adam_linear_step, decay_only_trajectory,
                                   decay_scale, first_fire)
from collapse_lab.runner import run_optimizer_recovery


def _recursion(theta0, eta, lam, steps, mu):
    """Torch's SGD on the decay alone, written out."""
    th, buf, out = theta0, None, [theta0]
    for _ in range(steps):
        g = lam * th
        buf = g if buf is None else mu * buf + g
        th = th - eta * buf
        out.append(th)
    return np.array(out)


@pytest.mark.parametrize('mu', [0.0, 0.5, 0.9, 0.99])
def test_momentum_closed_form_is_the_recursion(mu):
    eta, lam = 0.1, 5e-3
    s = decay_scale('sgd', eta, lam, 2000, momentum=mu)
    np.testing.assert_allclose(
        s, _recursion(1.0, eta, lam, 2000, mu), rtol=1e-9, atol=1e-12)
    # steady state: the step is eta / (1 - mu), to relative order
    # eta lam mu / (1 - mu)^2 (0.25 at mu = 0.99: the law needs it small)
    rate = s[2000] / s[1999]
    rel = (1 - rate) / (eta * lam / (1 - mu)) - 1
    assert abs(rel) <= 1.2 * eta * lam * mu / (1 - mu)**2 + 1e-9


def test_adamw_and_sgd_scale_every_coordinate_alike():
    for opt, kw in (('adamw', {}), ('sgd', dict(momentum=0.9))):
        tr = decay_only_trajectory([0.3, -2.0], opt, 1e-2, 0.1, 500, **kw)
        np.testing.assert_allclose(tr[:, 1] / tr[:, 0], -2.0 / 0.3)
    np.testing.assert_allclose(
        decay_scale('adamw', 1e-3, 0.5, 10), (1 - 5e-4)**np.arange(11))


def test_adam_l2_walks_at_lr_whatever_the_decay():
    # m/sqrt(v) is scale-free: the same path for lam and 10 lam (up to eps
    # against sqrt(v), relative 1e-8 / (lam |theta|) ~ 1e-5 here), the
    # first step exactly lr, and never more than lr per step here
    a = decay_only_trajectory([0.5, -0.2], 'adam', 1e-3, 5e-3, 300)
    b = decay_only_trajectory([0.5, -0.2], 'adam', 1e-3, 5e-2, 300)
    np.testing.assert_allclose(a, b, rtol=2e-4)
    np.testing.assert_allclose(np.abs(a[1] - a[0]), 1e-3, rtol=1e-4)
    assert np.all(np.abs(np.diff(a, axis=0)) <= 1e-3 * (1 + 1e-6))
    # so psBN's linear estimate is a lower bound on the law
    law = first_fire(a[:, :1], a[:, 1:] - 0.1, 0.1, [2.5], [-2.5])
    assert law[0] >= adam_linear_step(0.5, -0.3, 0.1, 2.5, 1e-3)


@pytest.fixture(scope='module')
def result():
    return run_optimizer_recovery(load_settings('quick'))


def test_every_optimizer_follows_its_law(result):
    for name, run in result['runs'].items():
        for kind in ('BN', 'psBN'):
            r = run[kind]
            assert r['observed_step'] == r['predicted_step'], (name, kind)
            assert r['law_max_abs_dev'] < 1e-12, (name, kind)
            assert all(r['zero_grad_while_dead']), (name, kind)


def test_psbn_recovers_bn_does_not(result):
    runs = result['runs']
    assert set(runs) == {'SGD+momentum', 'Adam+L2', 'AdamW'}
    for name, run in runs.items():
        assert all(t > 50 for t in run['psBN']['observed_step']), name
    # BN's ratio is constant under SGD and AdamW; under Adam + L2 its gamma
    # and beta race to 0 and it may fire at outputs ~1e-33 (full settings:
    # |gamma0| = 0.05 at step 1378), after these 800 steps
    for name in ('SGD+momentum', 'AdamW', 'Adam+L2'):
        assert all(t == -1 for t in runs[name]['BN']['observed_step'])


def test_closed_forms_predict_the_revival_step(result):
    runs = result['runs']
    # AdamW: exactly SGD's law at lr * wd
    r = runs['AdamW']['psBN']
    assert r['approx_step'] == r['observed_step']
    # momentum: the steady-state step lr/(1 - mu), within 5 % (the buffer
    # needs ~1/(1 - mu) steps to build up)
    r = runs['SGD+momentum']['psBN']
    for a, o in zip(r['approx_step'], r['observed_step']):
        assert abs(o - a) <= 0.05 * o
    # Adam + L2: the linear walk at lr per step is a lower bound; the steps
    # shrink as |g| falls below sqrt(v)'s memory, by up to 1.6x here
    r = runs['Adam+L2']['psBN']
    for a, o in zip(r['approx_step'], r['observed_step']):
        assert a < o < 1.6 * a


def test_adam_l2_collapses_the_dead_channel(result):
    # gamma goes to 0 under Adam + L2 for both kinds: psBN's channel comes
    # back as a collapsed one, outputting alpha
    run = result['runs']['Adam+L2']
    for kind in ('BN', 'psBN'):
        assert max(run[kind]['final_gamma']) < 1e-6
    # under SGD with momentum and AdamW, BN's gamma shrinks only by s_t
    for name in ('SGD+momentum', 'AdamW'):
        assert min(result['runs'][name]['BN']['final_gamma']) > 1e-3
