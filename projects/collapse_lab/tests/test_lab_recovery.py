# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The weight-decay recovery law with the real psBN layer and torch SGD."""
import numpy as np
import pytest

from collapse_lab import load_settings, run_recovery
from collapse_lab.recovery import law_ratio, predicted_recovery_step


def test_closed_form_is_the_recursion():
    c0, g0, alpha, eta, lam = -4.0, 0.1, 0.1, 0.1, 5e-3
    c, g, rec = c0, g0, [c0]
    for _ in range(3000):
        c += eta * lam / (1 - eta * lam) * alpha / g
        g *= 1 - eta * lam
        rec.append(c)
    np.testing.assert_allclose(
        law_ratio(c0, g0, alpha, eta, lam, 3000), rec, rtol=1e-10)
    t = predicted_recovery_step(c0, g0, alpha, eta, lam, -2.5)
    assert rec[t] > -2.5 >= rec[t - 1]
    assert predicted_recovery_step(c0, g0, 0.0, eta, lam, -2.5) == np.inf


@pytest.fixture(scope='module')
def result():
    return run_recovery(load_settings('quick'))


def test_psbn_recovers_at_the_predicted_step(result):
    assert all(t > 100 for t in result['predicted_step'])
    assert result['observed_step'] == result['predicted_step']
    assert result['law_max_abs_dev'] < 1e-9
    # dead really meant no data gradient, for both kinds
    assert all(result['zero_grad_while_dead'])


def test_bn_stays_dead(result):
    assert all(t == -1 for t in result['bn_first_fired'])
    assert result['bn_ratio_drift'] < 1e-9
