# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Figures of the collapse lab (matplotlib, Agg, small PNGs)."""
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .theorem1 import j_of_r  # noqa: E402

DPI = 80


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_theorem1(study: dict, path: str) -> str:
    """Left: MC vs formula, every grid point (log-log of |drop|, colour =
    sign). Middle: the three scalings at r = 0. Right: J(r) with the MC
    points rescaled by 2γ²/(η²c²)."""
    pts = study['points']
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    pred = np.array([p['pred'] for p in pts])
    mc = np.array([p['mc'] for p in pts])
    se = np.array([p['se'] for p in pts])
    neg = pred < 0
    for mask, col, lab in ((neg, 'C3', 'drop (< 0)'),
                           (~neg, 'C0', 'rise (> 0)')):
        ax[0].errorbar(np.abs(pred[mask]), np.abs(mc[mask]),
                       yerr=2 * se[mask], fmt='o', ms=3, color=col,
                       label=lab)
    lim = [np.abs(pred).min() / 2, np.abs(pred).max() * 2]
    ax[0].plot(lim, lim, 'k--', lw=1, label='y = x')
    ax[0].set(xscale='log', yscale='log', xlabel='|predicted E[ΔΦ]|',
              ylabel='|Monte-Carlo E[ΔΦ]| (±2 SE)',
              title='MC vs second-order formula')
    ax[0].legend(fontsize=8)
    for var, mark in (('eta', 'o'), ('c', 's'), ('gamma', '^')):
        at0 = [p for p in pts if p['sweep'] == var and p['r'] == 0.0]
        xs = np.array([p[var] for p in at0])
        ax[1].loglog(xs, [-p['mc'] for p in at0], mark, label=(
            f"{var}: slope {study['slopes'][var]:+.3f}"))
        ax[1].loglog(xs, [-p['pred'] for p in at0], 'k-', lw=0.8)
    ax[1].set(xlabel='η, c or γ (others at base; r = 0)',
              ylabel='−E[ΔΦ]', title='scaling (lines: formula)')
    ax[1].legend(fontsize=8)
    r = np.linspace(-4, 4, 400)
    ax[2].plot(r, j_of_r(r), 'k-', label='J(r)')
    ax[2].axhline(0, color='grey', lw=0.5)
    for var, mark in (('eta', 'o'), ('c', 's'), ('gamma', '^')):
        sel = [p for p in pts if p['sweep'] == var]
        scale = [2 * p['gamma'] ** 2 / (p['eta'] * p['c']) ** 2 for p in sel]
        ax[2].plot([p['r'] for p in sel],
                   [p['mc'] * s for p, s in zip(sel, scale)], mark, ms=4,
                   mfc='none', label=f'MC, {var} sweep')
    ax[2].set(xlabel='r = β/γ', ylabel='2γ² E[ΔΦ] / (η²c²)',
              title='J(r): MC collapses onto it')
    ax[2].legend(fontsize=8)
    return _save(fig, path)


def plot_recovery(sim: dict, law: Dict[str, np.ndarray], gamma0, eta, lam,
                  predicted, path: str) -> str:
    """C_t of BN and psBN channels vs step, the law dashed, the firing
    threshold of each channel dotted, predicted/observed recovery marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = sim['BN']['ratio'].shape[0]
    t = np.arange(steps)
    for i, g in enumerate(gamma0):
        col = f'C{i}'
        ps = sim['psBN']['ratio'][:, i].copy()
        f = sim['psBN']['first_fired'][i]
        if f >= 0:  # after firing the data gradient acts: not the law's
            ps[f + 1:] = np.nan
        ax.plot(t, ps, color=col, lw=2,
                label=f'psBN, |γ0|={g:g}')
        ax.plot(t, law['psBN'][i][:steps], 'k--', lw=0.8)
        ax.plot(t, sim['BN']['ratio'][:, i], color=col, lw=1, alpha=0.6,
                ls='-.', label=f'BN, |γ0|={g:g}')
        ax.axhline(-sim['x_hat_max'][i], color=col, ls=':', lw=0.8)
        if f >= 0:
            ax.plot([f], [sim['psBN']['ratio'][f, i]], 'o', color=col)
        ax.axvline(predicted[i], color=col, ls=':', lw=0.8)
    ax.set(xlabel=f'SGD step (η={eta:g}, λ={lam:g}, no data gradient)',
           ylabel='C_t = (β+α)/|γ|',
           title='dead channel under weight decay: psBN recovers, BN not\n'
                 '(dashed: law; dotted: firing threshold / predicted step;'
                 ' dot: first firing,\n psBN drawn until it fires)')
    ax.legend(fontsize=7, ncol=2, loc='upper left')
    return _save(fig, path)


def plot_rounds(results: Dict[str, List[List[dict]]], keys, title: str,
                path: str) -> str:
    """Per-round mean ± min/max over seeds of each ``key`` per norm."""
    fig, ax = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6))
    ax = np.atleast_1d(ax)
    for j, key in enumerate(keys):
        for i, (name, runs) in enumerate(results.items()):
            vals = np.array([[r[key] for r in run] for run in runs]) * 100
            rounds = [r['round'] for r in runs[0]]
            ax[j].plot(rounds, vals.mean(0), 'o-', color=f'C{i}',
                       label=name)
            ax[j].fill_between(rounds, vals.min(0), vals.max(0),
                               color=f'C{i}', alpha=0.2)
        ax[j].set(xlabel='round (end of cosine cycle)',
                  ylabel=f'{key} (%)', title=key)
    ax[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
