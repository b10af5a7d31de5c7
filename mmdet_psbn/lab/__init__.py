# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The collapse lab (``tools/collapse_lab.py``): pure functions in
:mod:`.theorem1` (Theorem 1 derived and Monte-Carlo checked),
:mod:`.recovery` (the weight-decay recovery law with the real layers) and
:mod:`.training` (collapse under warm restarts at CPU scale); figures in
:mod:`.figures`; :func:`run_lab` runs them all with one set of settings."""
import os.path as osp
from typing import Callable, Optional

import numpy as np
import torch

from . import recovery, theorem1, training

__all__ = ['QUICK', 'FULL', 'run_lab', 'run_theorem1', 'run_recovery',
           'run_training']

QUICK = dict(
    mc_n=200_000,
    rec=dict(gamma0=(0.05, 0.1), c0=-4.0, alpha=0.1, eta=0.1, lam=5e-3,
             steps=2000),
    # The full run's restarts experiment for BN and psBN on 2 of its seeds:
    # enough rounds for collapse to build up, so CI can assert the ordering.
    train=dict(width=8, steps=150, seeds=(0, 1), num_train=512,
               norms=('BN', 'psBN'),
               experiments=dict(restarts=[0.4, 0.4, 0.4, 0.4])))
FULL = dict(
    mc_n=2_000_000,
    rec=dict(gamma0=(0.05, 0.1, 0.2), c0=-4.0, alpha=0.1, eta=0.1,
             lam=5e-3, steps=3000),
    train=dict(width=8, steps=150, seeds=(0, 1, 2), num_train=512,
               norms=('BN', 'BN+LReLU', 'psBN'),
               experiments=dict(
                   restarts=[0.4, 0.4, 0.4, 0.4],
                   lr_low=[0.1, 0.1], lr_high=[1.0, 1.0],
                   finetune=[0.02, 0.4, 0.4]),
               # paper Fig. 5b: the restarts experiment from other initial
               # gammas (1.0 is the restarts experiment itself)
               gamma_init=dict(values=(0.5, 2.0), norms=('BN', 'psBN'),
                               rounds=[0.4, 0.4, 0.4, 0.4])))


def run_theorem1(cfg: dict, out_dir: Optional[str] = None) -> dict:
    study = theorem1.scaling_study(n=cfg['mc_n'])
    if out_dir:
        from .figures import plot_theorem1
        study['figure'] = plot_theorem1(
            study, osp.join(out_dir, 'lab_theorem1.png'))
    return study


def run_recovery(cfg: dict, out_dir: Optional[str] = None) -> dict:
    p = cfg['rec']
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        sim = recovery.simulate_dead_channels(
            p['gamma0'], p['c0'], alpha=p['alpha'], eta=p['eta'],
            lam=p['lam'], steps=p['steps'])
    finally:
        torch.set_num_threads(threads)
    predicted = [recovery.predicted_recovery_step(
        p['c0'], g, p['alpha'], p['eta'], p['lam'], -sim['x_hat_max'][i])
        for i, g in enumerate(p['gamma0'])]
    law = dict(psBN=[recovery.law_ratio(p['c0'], g, p['alpha'], p['eta'],
                                        p['lam'], p['steps'])
                     for g in p['gamma0']])
    # largest deviation from the law while still dead
    dev = max(float(np.abs(sim['psBN']['ratio'][:f + 1, i] -
                           law['psBN'][i][:f + 1]).max())
              for i, f in enumerate(predicted))
    out = dict(params=dict(p), predicted_step=predicted,
               observed_step=sim['psBN']['first_fired'].tolist(),
               bn_first_fired=sim['BN']['first_fired'].tolist(),
               bn_ratio_drift=float(np.abs(sim['BN']['ratio'] - p['c0'])
                                    .max()),
               law_max_abs_dev=dev,
               zero_grad_while_dead=sim['psBN']['zero_grad_while_dead']
               .tolist() + sim['BN']['zero_grad_while_dead'].tolist(),
               x_hat_max=sim['x_hat_max'].tolist())
    if out_dir:
        from .figures import plot_recovery
        out['figure'] = plot_recovery(sim, law, p['gamma0'], p['eta'],
                                      p['lam'], predicted,
                                      osp.join(out_dir, 'lab_recovery.png'))
    return out


def run_training(cfg: dict, out_dir: Optional[str] = None,
                 log: Callable = print) -> dict:
    p = cfg['train']
    data = training.load_toy_cifar(p['num_train'])
    out = dict(params={k: v for k, v in p.items()}, experiments={})
    for exp, rounds in p['experiments'].items():
        res = {}
        for norm in p['norms']:
            res[norm] = []
            for seed in p['seeds']:
                rows = training.train_rounds(norm, rounds, p['steps'], data,
                                             width=p['width'], seed=seed)
                res[norm].append(rows)
                last = rows[-1]
                log(f'[{exp}] {norm:8s} seed {seed}: collapsed '
                    f'{last["collapsed"]:.3f} dead {last["dead"]:.3f} '
                    f'sparsity {last["sparsity"]:.3f} acc {last["acc"]:.2f}')
        out['experiments'][exp] = res
    if 'gamma_init' in p:
        out['gamma_init'] = _gamma_init_study(p, data, out, log)
    if out_dir:
        from .figures import plot_rounds
        exps = out['experiments']
        keys = ('collapsed', 'dead', 'sparsity')
        out['figures'] = [plot_rounds(
            exps['restarts'], keys,
            f"ResNet-20 (width {p['width']}), random labels, cosine restarts "
            f"at lr {p['experiments']['restarts'][0]}; mean and min-max "
            f"over {len(p['seeds'])} seeds",
            osp.join(out_dir, 'lab_restarts.png'))]
        if 'lr_low' in exps:
            merged = {}
            for exp in ('lr_low', 'restarts', 'lr_high'):
                lr = p['experiments'][exp][0]
                for norm in ('BN', 'psBN'):
                    merged[f'{norm}, lr {lr:g}'] = [
                        run[:3] for run in exps[exp][norm]]
            out['figures'].append(plot_rounds(
                merged, keys, 'effect of the initial learning rate '
                '(first 2 rounds)', osp.join(out_dir, 'lab_lr.png')))
        if 'gamma_init' in out:
            out['figures'].append(plot_rounds(
                out['gamma_init'], keys,
                'effect of the initial gamma: restarts at lr '
                f"{p['gamma_init']['rounds'][0]:g} from gamma0 = "
                + ', '.join(f'{g:g}' for g in _gammas(p)),
                osp.join(out_dir, 'lab_gamma_init.png')))
        if 'finetune' in exps:
            r = p['experiments']['finetune']
            out['figures'].append(plot_rounds(
                exps['finetune'], keys,
                f'finetuning: 1 round at lr {r[0]:g}, then restarts at lr '
                f'{r[1]:g}', osp.join(out_dir, 'lab_finetune.png')))
    return out


def _gammas(p):
    return sorted(set(p['gamma_init']['values']) | {1.0})


def _gamma_init_study(p, data, out, log):
    """{'<norm>, gamma0 <g>': runs}; gamma0 = 1 is the restarts
    experiment's own runs when it has the same rounds."""
    g = p['gamma_init']
    restarts = out['experiments'].get('restarts')
    same = p['experiments'].get('restarts') == g['rounds']
    res = {}
    for norm in g['norms']:
        for gamma in _gammas(p):
            name = f'{norm}, gamma0 {gamma:g}'
            if gamma == 1.0 and same and restarts and norm in restarts:
                res[name] = restarts[norm]
                continue
            res[name] = []
            for seed in p['seeds']:
                rows = training.train_rounds(
                    norm, g['rounds'], p['steps'], data, width=p['width'],
                    gamma_init=gamma, seed=seed)
                res[name].append(rows)
                last = rows[-1]
                log(f'[gamma_init] {name:16s} seed {seed}: collapsed '
                    f'{last["collapsed"]:.3f} dead {last["dead"]:.3f} '
                    f'sparsity {last["sparsity"]:.3f}')
    return res


def run_lab(quick: bool = False, out_dir: Optional[str] = None,
            training: bool = True, log: Callable = print) -> dict:
    """Run every part with the QUICK or FULL settings; figures go to
    ``out_dir`` when given. Returns the numbers (JSON-able)."""
    cfg = QUICK if quick else FULL
    results = dict(mode='quick' if quick else 'full')
    results['theorem1'] = run_theorem1(cfg, out_dir)
    log(f"theorem1 slopes: {results['theorem1']['slopes']}")
    results['recovery'] = run_recovery(cfg, out_dir)
    log(f"recovery predicted {results['recovery']['predicted_step']} "
        f"observed {results['recovery']['observed_step']}")
    if training:
        results['training'] = run_training(cfg, out_dir, log)
    return results
