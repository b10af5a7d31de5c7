# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Plots of filter collapse, written as PNG files.

Built on matplotlib's object API (``Figure``), so they never touch the
global pyplot state or need a display.

- :func:`plot_gamma_hist`: the |γ| histogram per model (paper Fig. 1a in
  spirit), the collapse threshold marked.
- :func:`plot_gamma_beta`: |γ| against β + α with the dead region shaded
  (Fig. 1b in spirit).
- :func:`plot_history`: collapsed / dead share and FLOPs sparsity over a run
  or a series of checkpoints.
- :func:`save_figure`: how each is written (any other figure of the
  project too).
"""
from statistics import NormalDist
from typing import Dict, List, Sequence

import numpy as np
from matplotlib.figure import Figure

from .collapse import CollapseStats

__all__ = ['plot_gamma_beta', 'plot_gamma_hist', 'plot_history', 'save_figure']


def save_figure(fig: Figure, path: str, dpi: int = 110) -> str:
    """Lay ``fig`` out tightly and write it to ``path`` (the format from the
    extension); return ``path``.

    The one way our figures are saved.
    """
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_gamma_hist(stats: Sequence[CollapseStats], labels: Sequence[str],
                    path: str) -> str:
    """Histogram of log10 |γ| of each model (zero-init layers left out)."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    floor = 1e-8
    values = []
    for s in stats:
        counted = s._counted()
        values.append(np.log10(np.maximum(s.abs_gamma[counted], floor)))
    lo = min([v.min() for v in values if len(v)] + [-4.0])
    hi = max([v.max() for v in values if len(v)] + [0.5])
    bins = np.linspace(lo, hi, 60)
    for v, label, s in zip(values, labels, stats):
        share = s.summary()['collapsed']
        ax.hist(
            v,
            bins=bins,
            alpha=0.55,
            label=f'{label} (collapsed {100 * share:.1f} %)')
    thr = np.log10(stats[0].gamma_thr) if stats else -3
    ax.axvline(thr, color='k', ls='--', lw=1)
    ax.text(
        thr, ax.get_ylim()[1] * 0.95, ' |γ| threshold', va='top', fontsize=8)
    ax.set_xlabel('log10 |γ|')
    ax.set_ylabel('channels')
    ax.set_title('Norm-layer scales')
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_gamma_beta(stats: CollapseStats, label: str, path: str) -> str:
    """Scatter of |γ| against β + α; the dead region ``(β + α) / |γ| <
    Φ⁻¹(prob_thr)`` is shaded.

    Channels that are not rectified (they feed an addition) are drawn apart:
    they cannot be dead.
    """
    fig = Figure(figsize=(5.6, 4.4))
    ax = fig.subplots()
    counted = stats._counted()
    g, b = stats.abs_gamma[counted], stats.shifted_beta[counted]
    rect = stats._rectified()[counted]
    dead = stats.dead[counted] & rect
    alive = rect & ~dead
    ax.scatter(g[alive], b[alive], s=3, alpha=0.5, label='alive')
    if (~rect).any():
        ax.scatter(
            g[~rect],
            b[~rect],
            s=3,
            alpha=0.3,
            color='tab:gray',
            label=f'not rectified ({int((~rect).sum())})')
    ax.scatter(
        g[dead],
        b[dead],
        s=5,
        alpha=0.8,
        color='tab:red',
        label=f'dead ({int(dead.sum())})')
    xmax = float(g.max()) * 1.05 if len(g) else 1.0
    z = NormalDist().inv_cdf(stats.prob_thr)
    xs = np.array([0.0, xmax])
    ylo = min(float(b.min()) if len(b) else -1.0, z * xmax) - 0.1
    ax.fill_between(
        xs,
        z * xs,
        ylo,
        color='tab:red',
        alpha=0.08,
        label=f'dead region: P(y>0) < {stats.prob_thr:g}')
    ax.axhline(0, color='k', lw=0.5)
    ax.set_xlim(0, xmax)
    ax.set_ylim(bottom=ylo)
    ax.set_xlabel('|γ|')
    ax.set_ylabel('β + α')
    ax.set_title(f'{label}: BN parameters')
    ax.legend(fontsize=8, loc='upper left')
    return save_figure(fig, path)


def plot_history(history: List[Dict[str, float]],
                 x_key: str,
                 path: str,
                 title: str = 'Filter collapse over training') -> str:
    """Shares over time; ``history`` rows have ``x_key`` and any of
    ``collapsed``, ``dead``, ``inactive``, ``sparsity`` (fractions); a measure
    a row lacks is not drawn there."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    labels = dict(
        dead='dead (rectified channels)',
        inactive='inactive (rectified, probe batch)',
        sparsity='FLOPs sparsity')
    for key, style in (('collapsed', '-o'), ('dead', '-s'), ('inactive', '-x'),
                       ('sparsity', '-^')):
        pts = [(row[x_key], row[key]) for row in history
               if row.get(key) is not None]
        if pts:
            ax.plot([x for x, _ in pts], [100 * y for _, y in pts],
                    style,
                    ms=3,
                    label=labels.get(key, key))
    ax.set_xlabel(x_key)
    ax.set_ylabel('%')
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
