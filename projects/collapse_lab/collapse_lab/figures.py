# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Figures of the collapse lab (matplotlib, Agg, small PNGs)."""
import os.path as osp
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmdet_psbn.analysis.plots import save_figure  # noqa: E402
from .theorem1 import j_of_r  # noqa: E402

DPI = 80


def _save(fig, path):
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)  # pyplot keeps its figures until closed
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
    for mask, col, lab in ((neg, 'C3', 'drop (< 0)'), (~neg, 'C0',
                                                       'rise (> 0)')):
        ax[0].errorbar(
            np.abs(pred[mask]),
            np.abs(mc[mask]),
            yerr=2 * se[mask],
            fmt='o',
            ms=3,
            color=col,
            label=lab)
    lim = [np.abs(pred).min() / 2, np.abs(pred).max() * 2]
    ax[0].plot(lim, lim, 'k--', lw=1, label='y = x')
    ax[0].set(
        xscale='log',
        yscale='log',
        xlabel='|predicted E[ΔΦ]|',
        ylabel='|Monte-Carlo E[ΔΦ]| (±2 SE)',
        title='MC vs second-order formula')
    ax[0].legend(fontsize=8)
    for var, mark in (('eta', 'o'), ('c', 's'), ('gamma', '^')):
        at0 = [p for p in pts if p['sweep'] == var and p['r'] == 0.0]
        xs = np.array([p[var] for p in at0])
        ax[1].loglog(
            xs, [-p['mc'] for p in at0],
            mark,
            label=(f"{var}: slope {study['slopes'][var]:+.3f}"))
        ax[1].loglog(xs, [-p['pred'] for p in at0], 'k-', lw=0.8)
    ax[1].set(
        xlabel='η, c or γ (others at base; r = 0)',
        ylabel='−E[ΔΦ]',
        title='scaling (lines: formula)')
    ax[1].legend(fontsize=8)
    r = np.linspace(-4, 4, 400)
    ax[2].plot(r, j_of_r(r), 'k-', label='J(r)')
    ax[2].axhline(0, color='grey', lw=0.5)
    for var, mark in (('eta', 'o'), ('c', 's'), ('gamma', '^')):
        sel = [p for p in pts if p['sweep'] == var]
        scale = [2 * p['gamma']**2 / (p['eta'] * p['c'])**2 for p in sel]
        ax[2].plot([p['r'] for p in sel],
                   [p['mc'] * s for p, s in zip(sel, scale)],
                   mark,
                   ms=4,
                   mfc='none',
                   label=f'MC, {var} sweep')
    ax[2].set(
        xlabel='r = β/γ',
        ylabel='2γ² E[ΔΦ] / (η²c²)',
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
        ax.plot(t, ps, color=col, lw=2, label=f'psBN, |γ0|={g:g}')
        ax.plot(t, law['psBN'][i][:steps], 'k--', lw=0.8)
        ax.plot(
            t,
            sim['BN']['ratio'][:, i],
            color=col,
            lw=1,
            alpha=0.6,
            ls='-.',
            label=f'BN, |γ0|={g:g}')
        ax.axhline(-sim['x_hat_max'][i], color=col, ls=':', lw=0.8)
        if f >= 0:
            ax.plot([f], [sim['psBN']['ratio'][f, i]], 'o', color=col)
        ax.axvline(predicted[i], color=col, ls=':', lw=0.8)
    ax.set(
        xlabel=f'SGD step (η={eta:g}, λ={lam:g}, no data gradient)',
        ylabel='C_t = (β+α)/|γ|',
        title='dead channel under weight decay: psBN recovers, BN not\n'
        '(dashed: law; dotted: firing threshold / predicted step;'
        ' dot: first firing,\n psBN drawn until it fires)')
    ax.legend(fontsize=7, ncol=2, loc='upper left')
    return _save(fig, path)


_LABELS = dict(
    collapsed='collapsed (|γ| < 1e-3)',
    dead='dead (rectified channels)',
    dead_all='dead, all BNs (old measure)',
    inactive='inactive on 256 test digits',
    sparsity='FLOPs sparsity',
    train_acc='train accuracy',
    test_acc='test accuracy')


def plot_rounds(results: Dict[str, List[List[dict]]], keys, title: str,
                path: str) -> str:
    """Per-round mean and min-max band over seeds of each ``key`` (as %) per
    name."""
    fig, ax = plt.subplots(1, len(keys), figsize=(3.5 * len(keys), 3.4))
    ax = np.atleast_1d(ax)
    for j, key in enumerate(keys):
        for i, (name, runs) in enumerate(results.items()):
            vals = np.array([[r[key] for r in run] for run in runs]) * 100
            rounds = [r['round'] for r in runs[0]]
            ax[j].plot(
                rounds, vals.mean(0), 'o-', color=f'C{i}', label=name, ms=4)
            ax[j].fill_between(
                rounds, vals.min(0), vals.max(0), color=f'C{i}', alpha=0.2)
        ax[j].set(
            xlabel='round (end of cosine cycle)',
            ylabel='%',
            title=_LABELS.get(key, key))
        ax[j].set_xticks(rounds)
    ax[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_early(curves: Dict[str, List[List[dict]]], title: str,
               path: str) -> str:
    """Test accuracy against iterations, one panel per learning rate."""
    lrs = sorted({name.split(', lr ')[1]
                  for name in curves},
                 key=lambda v: -float(v))
    fig, ax = plt.subplots(
        1, len(lrs), figsize=(4.6 * len(lrs), 3.6), sharey=True)
    ax = np.atleast_1d(ax)
    for j, lr in enumerate(lrs):
        sel = [(n, runs) for n, runs in curves.items()
               if n.endswith(f', lr {lr}')]
        for i, (name, runs) in enumerate(sel):
            its = [r['iters'] for r in runs[0]]
            vals = np.array([[r['test_acc'] for r in run]
                             for run in runs]) * 100
            ax[j].plot(
                its,
                vals.mean(0),
                'o-',
                color=f'C{i}',
                ms=4,
                label=name.split(', lr ')[0])
            ax[j].fill_between(
                its, vals.min(0), vals.max(0), color=f'C{i}', alpha=0.15)
        ax[j].set(
            xscale='log',
            xlabel='iterations (batch 16)',
            ylabel='test accuracy (%)',
            title=f'constant lr {lr}')
        ax[j].set_xticks(its, [str(i) for i in its])
        ax[j].minorticks_off()
        ax[j].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def training_figures(out: dict, out_dir: str) -> List[str]:
    """Every training figure of :func:`collapse_lab.run_training`'s result that
    has data; returns their paths."""
    p = out['params']
    d, dg = p.get('digits') or {}, out.get('digits', {})
    real = ('collapsed', 'dead', 'inactive', 'sparsity', 'test_acc')
    n = len(p['seeds'])
    where = (f"real digits, ResNet-20 width {p['width']}; mean and min-max "
             f'over {n} seeds')
    paths = []
    join = osp.join
    if dg.get('restarts'):
        r = d['restarts']
        paths.append(
            plot_rounds(
                dg['restarts'], real,
                f"warm restarts: {len(r['rounds'])} cosine rounds of "
                f"{d['steps']} steps at lr {r['rounds'][0]:g}, "
                f"wd {r['wd']:g}; " + where, join(out_dir,
                                                  'lab_restarts.png')))
    if dg.get('finetune'):
        f = d['finetune']
        paths.append(
            plot_rounds(
                dg['finetune'], real, 'finetuning: BN pretrained at lr '
                f"{f['pretrain']['rounds'][0]:g} (round 0, converted), new "
                f"head, {len(f['rounds'])} rounds at lr {f['rounds'][0]:g}, "
                f"wd {f['wd']:g}; " + where, join(out_dir,
                                                  'lab_finetune.png')))
    if dg.get('lr') and dg.get('restarts'):
        merged = {}
        k = d['lr']['num_rounds']
        for lr in sorted(
                set(d['lr']['values']) | {d['restarts']['rounds'][0]}):
            for norm in d['lr']['norms']:
                runs = dg['lr'].get(f'{norm}, lr {lr:g}')
                if runs is None:
                    runs = [run[:k + 1] for run in dg['restarts'][norm]]
                merged[f'{norm}, lr {lr:g}'] = runs
        paths.append(
            plot_rounds(merged, real,
                        f'initial learning rate (first {k} rounds); ' + where,
                        join(out_dir, 'lab_lr.png')))
    if dg.get('gamma_init'):
        paths.append(
            plot_rounds(
                dg['gamma_init'], real, 'initial gamma, restarts at lr '
                f"{d['restarts']['rounds'][0]:g}; " + where,
                join(out_dir, 'lab_gamma_init.png')))
    if dg.get('early'):
        e = d['early']
        paths.append(
            plot_early(
                dg['early'], f"from scratch, batch {e['batch']}, no warm-up, "
                f"wd {e['wd']:g}; real digits; mean and min-max over "
                f"{len(e['seeds'])} seeds", join(out_dir, 'lab_early.png')))
    rl = out.get('random_labels', {}).get('restarts')
    if rl:
        q = p['random_labels']
        paths.append(
            plot_rounds(
                rl, ('collapsed', 'dead', 'dead_all', 'sparsity', 'train_acc'),
                'paper §3.3: random labels (toy CIFAR images), restarts at '
                f"lr {q['rounds'][0]:g}, wd {q['wd']:g}; mean and min-max "
                f'over {n} seeds', join(out_dir, 'lab_random_labels.png')))
    return paths


def plot_optimizers(rec: dict, runs, path: str) -> str:
    """Docs/optimizers.md's figure.

    Left: a dead channel under each optimizer
    of ``rec`` (:func:`collapse_lab.runner.run_optimizer_recovery`, its
    middle γ0): the largest pre-activation on the batch, measured (lines,
    psBN solid, BN dashed) and by the law (dots). Right (with ``runs``, the
    training experiment ``{'<optimizer>, <norm>': runs}``): dead and
    collapsed shares and test accuracy per round.
    """
    keys = ('dead', 'collapsed', 'test_acc') if runs else ()
    fig, ax = plt.subplots(
        1, 1 + len(keys), figsize=(4.2 + 3.4 * len(keys), 3.6))
    ax = np.atleast_1d(ax)
    p = rec['params']
    i = len(p['gamma0']) // 2
    for j, (name, r) in enumerate(rec['runs'].items()):
        j = OPT_ORDER.get(name, j)
        sim = r['sim']
        for kind, shift, ls in (('psBN', p['alpha'], '-'), ('BN', 0.0, '--')):
            top = {}
            for src, d in (('measured', sim[kind]), ('law', r[kind]['law'])):
                g, b = d['gamma'][:, i], d['beta'][:, i]
                top[src] = b + shift + np.maximum(g * sim['x_hat_max'][i],
                                                  g * sim['x_hat_min'][i])
            t = np.arange(len(top['law']))
            first = r[kind]['observed_step'][i]
            end = first + 1 if first >= 0 else len(t)
            ax[0].plot(
                t[:end],
                top['measured'][:end],
                ls,
                color=f'C{j}',
                lw=3 if name == 'SGD' else 1.2,  # AdamW lies on it
                alpha=0.5 if name == 'SGD' else 1,
                label=f'{name}, {kind}')
            ax[0].plot(
                t[:end:max(1, end // 12)],
                top['law'][:end:max(1, end // 12)],
                'o',
                color=f'C{j}',
                ms=3,
                mfc='none')
    ax[0].axhline(0, color='grey', lw=0.5)
    ax[0].set(xlabel='step', ylabel='max pre-activation on the batch')
    ax[0].set_title(
        f"dead channel, |γ0| = {p['gamma0'][i]}, C0 = {p['c0']} (dots: law; "
        'AdamW on SGD)',
        fontsize=9)
    ax[0].legend(fontsize=6)
    for k, key in enumerate(keys, 1):
        for name, rs in runs.items():
            opt, norm = name.split(', ')
            vals = np.array([[row[key] for row in run] for run in rs]) * 100
            rounds = [row['round'] for row in rs[0]]
            col = f'C{OPT_ORDER.get(opt, 3)}'
            ls = {'psBN': '-', 'BN': '--'}.get(norm, ':')
            ax[k].plot(
                rounds,
                vals.mean(0),
                ls,
                marker='o',
                ms=3,
                color=col,
                label=name)
            ax[k].fill_between(
                rounds, vals.min(0), vals.max(0), color=col, alpha=0.12)
        ax[k].set(
            xlabel='round (0: pretrained, converted)',
            ylabel='%',
            title=_LABELS.get(key, key))
        ax[k].set_xticks(rounds)
    if keys:
        ax[1].legend(fontsize=6)
    fig.suptitle(
        'optimizers: dead-channel recovery (left) and finetuning on real '
        'digits (right; mean and min-max over seeds)',
        fontsize=10)
    return _save(fig, path)


# colour of each optimizer in plot_optimizers' training panels (the
# recovery panel colours its runs in settings order)
OPT_ORDER = {'SGD': 0, 'SGD+momentum': 1, 'Adam+L2': 2, 'AdamW': 3}
