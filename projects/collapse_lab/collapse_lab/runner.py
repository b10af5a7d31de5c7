# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Runs the lab's parts with one set of settings and returns the numbers.

The settings are data: ``projects/collapse_lab/settings/<name>.json``
(``quick``: what CI checks; ``full``: docs/results.md), read by
:func:`load_settings`; the README there says what each key means. The
training runs are independent (each seeds its own generators), so they go
to a pool of one-thread worker processes.
"""
import json
import multiprocessing
import os
import os.path as osp
from typing import Callable, Optional

import numpy as np
import torch

from . import recovery, theorem1, training

__all__ = [
    'SETTINGS_DIR', 'OPT_NAMES', 'load_settings', 'run_lab', 'run_theorem1',
    'run_recovery', 'run_optimizer_recovery', 'run_training'
]

# optimizer key of the settings -> its name in results and figures
OPT_NAMES = {'sgd': 'SGD+momentum', 'adam': 'Adam+L2', 'adamw': 'AdamW'}

SETTINGS_DIR = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'settings')


def load_settings(name: str) -> dict:
    """The settings ``name``: ``'quick'`` or ``'full'`` (a file of
    :data:`SETTINGS_DIR` without its ``.json``), or the path of a JSON file of
    the same shape.

    Raises:
        FileNotFoundError: no such file; the message lists the known names.
    """
    path = (
        name
        if name.endswith('.json') else osp.join(SETTINGS_DIR, f'{name}.json'))
    if not osp.isfile(path):
        known = sorted(f[:-len('.json')] for f in os.listdir(SETTINGS_DIR)
                       if f.endswith('.json'))
        raise FileNotFoundError(
            f'no lab settings {name!r} (looked for {path}); known: {known}, '
            'or give the path of a .json file')
    with open(path) as f:
        return json.load(f)


def run_theorem1(cfg: dict, out_dir: Optional[str] = None) -> dict:
    study = theorem1.scaling_study(n=cfg['mc_n'])
    if out_dir:
        from .figures import plot_theorem1
        study['figure'] = plot_theorem1(study,
                                        osp.join(out_dir, 'lab_theorem1.png'))
    return study


def run_recovery(cfg: dict, out_dir: Optional[str] = None) -> dict:
    p = cfg['rec']
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        sim = recovery.simulate_dead_channels(
            p['gamma0'],
            p['c0'],
            alpha=p['alpha'],
            eta=p['eta'],
            lam=p['lam'],
            steps=p['steps'])
    finally:
        torch.set_num_threads(threads)
    predicted = [
        recovery.predicted_recovery_step(p['c0'], g, p['alpha'], p['eta'],
                                         p['lam'], -sim['x_hat_max'][i])
        for i, g in enumerate(p['gamma0'])
    ]
    law = dict(psBN=[
        recovery.law_ratio(p['c0'], g, p['alpha'], p['eta'], p['lam'],
                           p['steps']) for g in p['gamma0']
    ])
    # largest deviation from the law while still dead
    dev = max(
        float(
            np.abs(sim['psBN']['ratio'][:f + 1, i] -
                   law['psBN'][i][:f + 1]).max())
        for i, f in enumerate(predicted))
    out = dict(
        params=dict(p),
        predicted_step=predicted,
        observed_step=sim['psBN']['first_fired'].tolist(),
        bn_first_fired=sim['BN']['first_fired'].tolist(),
        bn_ratio_drift=float(np.abs(sim['BN']['ratio'] - p['c0']).max()),
        law_max_abs_dev=dev,
        zero_grad_while_dead=sim['psBN']['zero_grad_while_dead'].tolist() +
        sim['BN']['zero_grad_while_dead'].tolist(),
        x_hat_max=sim['x_hat_max'].tolist())
    if out_dir:
        from .figures import plot_recovery
        out['figure'] = plot_recovery(sim, law, p['gamma0'], p['eta'],
                                      p['lam'], predicted,
                                      osp.join(out_dir, 'lab_recovery.png'))
    return out


def run_optimizer_recovery(cfg: dict) -> dict:
    """The dead-channel recovery of ``cfg['rec_optimizers']`` (one run per
    optimizer): measured with the real layers against the law (the optimizer's
    recursion on the decay alone, :func:`recovery.first_fire`) and against its
    closed-form approximation (SGD with momentum:

    :func:`recovery.predicted_recovery_step` at the steady-state step
    :math:`\\eta/(1-\\mu)`; AdamW: the same at :math:`\\eta`, exact; Adam +
    L2: :func:`recovery.adam_linear_step`).
    """
    p = cfg['rec_optimizers']
    g0 = np.asarray(p['gamma0'], dtype=np.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = dict(params=p, runs={})
    try:
        for name, r in p['runs'].items():
            opt, eta, lam = r['optimizer'], r['eta'], r['lam']
            mom = r.get('momentum', 0.0)
            sim = recovery.simulate_dead_channels(
                g0,
                p['c0'],
                alpha=p['alpha'],
                eta=eta,
                lam=lam,
                steps=r['steps'],
                optimizer=opt,
                momentum=mom,
                fire_tol=p['fire_tol'])
            res = dict(sim=sim)
            for kind, shift in (('BN', 0.0), ('psBN', p['alpha'])):
                b0 = p['c0'] * np.abs(g0) - shift
                law = dict(
                    gamma=recovery.decay_only_trajectory(
                        g0, opt, eta, lam, r['steps'], momentum=mom),
                    beta=recovery.decay_only_trajectory(
                        b0, opt, eta, lam, r['steps'], momentum=mom))
                first = sim[kind]['first_fired']
                dev = max(
                    float(
                        np.abs(sim[kind][k][:(f + 1 if f >= 0 else None), i] -
                               law[k][:(f + 1 if f >= 0 else None), i]).max())
                    for i, f in enumerate(first) for k in ('gamma', 'beta'))
                if opt == 'adam':
                    approx = [
                        recovery.adam_linear_step(g, b, shift,
                                                  sim['x_hat_max'][i], eta)
                        for i, (g, b) in enumerate(zip(g0, b0))
                    ]
                else:
                    approx = [
                        recovery.predicted_recovery_step(
                            p['c0'], g, shift, eta / (1 - mom), lam,
                            -sim['x_hat_max'][i]) for i, g in enumerate(g0)
                    ]
                res[kind] = dict(
                    observed_step=first.tolist(),
                    predicted_step=recovery.first_fire(law['gamma'],
                                                       law['beta'], shift,
                                                       sim['x_hat_max'],
                                                       sim['x_hat_min'],
                                                       p['fire_tol']).tolist(),
                    approx_step=[float(a) for a in approx],
                    law_max_abs_dev=dev,
                    zero_grad_while_dead=sim[kind]
                    ['zero_grad_while_dead'].tolist(),
                    final_gamma=np.abs(sim[kind]['gamma'][-1]).tolist(),
                    final_beta=sim[kind]['beta'][-1].tolist(),
                    law=law)
            out['runs'][name] = res
    finally:
        torch.set_num_threads(threads)
    return out


# ------------------------------------------------------------------ training
# Runs are independent (each seeds its own generators), so they go to a pool
# of one-thread worker processes; the data are loaded once, before the fork.
_DATA: dict = {}


def _job(args):
    kind, key, kw = args
    torch.set_num_threads(1)
    data = _DATA[kw.pop('data')]
    if kind == 'finetune':
        kw['state'] = _DATA['pretrained'][kw['seed']]
    fn = dict(
        rounds=training.train_rounds,
        pretrain=training.pretrain,
        finetune=training.finetune,
        early=training.early_curve)[kind]
    return key, fn(data=data, **kw)


def _pool_map(jobs, workers, log):
    """``{key: result}`` of the jobs, longest first over ``workers`` processes
    (in this process when ``workers`` is 1)."""
    jobs = sorted(jobs, key=lambda j: -j[2].pop('_cost', 0))
    out = {}
    if workers <= 1:
        results = map(_job, jobs)
    else:
        ctx = multiprocessing.get_context('fork')
        pool = ctx.Pool(workers)
        results = pool.imap_unordered(_job, jobs)
    try:
        for key, res in results:
            out[key] = res
            log(_describe(key, res))
    finally:
        if workers > 1:
            pool.close()
            pool.join()
    return out


def _describe(key, res):
    if key[0] == 'pretrain':
        return f'[pretrain] seed {key[-1]} done'
    last = res[-1]
    if 'collapsed' not in last:
        return (f'[{key[0]}] {key[1]:18s} seed {key[-1]}: test acc ' +
                ' '.join(f"{r['test_acc']:.2f}" for r in res))
    return (f'[{key[0]}] {key[1]:18s} seed {key[-1]}: collapsed '
            f"{last['collapsed']:.3f} dead {last['dead']:.3f} inactive "
            f"{last.get('inactive', float('nan')):.3f} sparsity "
            f"{last['sparsity']:.3f} acc {last['train_acc']:.3f}/"
            f"{last.get('test_acc', float('nan')):.3f}")


def _digit_jobs(p):
    d, seeds, width, alpha = p['digits'], p['seeds'], p['width'], p['alpha']
    common = dict(
        data='digits', width=width, batch_size=d['batch'], alpha=alpha)
    jobs = []

    def rounds_job(exp, name, norm, rounds, wd, seed, **kw):
        jobs.append(('rounds', (exp, name, seed),
                     dict(
                         common,
                         norm=norm,
                         rounds=list(rounds),
                         steps_per_round=d['steps'],
                         weight_decay=wd,
                         seed=seed,
                         _cost=len(rounds) * d['steps'],
                         **kw)))

    r = d.get('restarts')
    for seed in seeds:
        if r:
            for norm in r.get('norms', p['norms']):
                rounds_job('restarts', norm, norm, r['rounds'], r['wd'], seed)
        if d.get('lr'):
            k = d['lr']['num_rounds']
            for lr in d['lr']['values']:
                for norm in d['lr']['norms']:
                    rounds_job('lr', f'{norm}, lr {lr:g}', norm, [lr] * k,
                               r['wd'], seed)
        if d.get('gamma_init'):
            for g in d['gamma_init']['values']:
                for norm in d['gamma_init']['norms']:
                    rounds_job(
                        'gamma_init',
                        f'{norm}, gamma0 {g:g}',
                        norm,
                        r['rounds'],
                        r['wd'],
                        seed,
                        gamma_init=g)
        for opt, o in (d.get('optimizers') or {}).items():
            for norm in p['norms']:
                jobs.append(('finetune', ('optimizers',
                                          f'{OPT_NAMES[opt]}, {norm}', seed),
                             dict(
                                 common,
                                 norm=norm,
                                 rounds=list(o['rounds']),
                                 steps_per_round=d['steps'],
                                 weight_decay=o['wd'],
                                 seed=seed,
                                 optimizer=opt,
                                 _cost=len(o['rounds']) * d['steps'])))
        if d.get('finetune'):
            f = d['finetune']
            for norm in p['norms']:
                jobs.append(('finetune', ('finetune', norm, seed),
                             dict(
                                 common,
                                 norm=norm,
                                 rounds=list(f['rounds']),
                                 steps_per_round=d['steps'],
                                 weight_decay=f['wd'],
                                 seed=seed,
                                 _cost=len(f['rounds']) * d['steps'])))
    e = d.get('early')
    if e:
        for lr in e['lrs']:
            for norm in e['norms']:
                for seed in e['seeds']:
                    jobs.append(
                        ('early', ('early', f'{norm}, lr {lr:g}', seed),
                         dict(
                             data='digits',
                             norm=norm,
                             lr=lr,
                             iters=e['iters'],
                             width=width,
                             batch_size=e['batch'],
                             weight_decay=e['wd'],
                             seed=seed,
                             alpha=alpha,
                             _cost=max(e['iters']) * e['batch'] / d['batch'])))
    return jobs


def _collect(found, exp, names, seeds):
    return {
        name: [found[(exp, name, s)] for s in seeds]
        for name in names if (exp, name, seeds[0]) in found
    }


def run_training(cfg: dict,
                 out_dir: Optional[str] = None,
                 log: Callable = print,
                 workers: int = 2) -> dict:
    """The training experiments of ``cfg['train']`` (settings/*.json):

    ``digits`` (real digits: restarts, lr, gamma_init, finetune, early) and
    ``random_labels`` (paper §3.3). Returns, per experiment, ``{name:
    [rows of seed 0, rows of seed 1, ...]}``.
    """
    p = cfg['train']
    seeds = tuple(p['seeds'])
    out = dict(params=p, digits={}, random_labels={})
    jobs = []
    d = p.get('digits')
    if d:
        _DATA['digits'] = training.load_digits(d['size'])
        f = d.get('finetune')
        if f:
            pre = _pool_map([('pretrain', ('pretrain', seed),
                              dict(
                                  data='digits',
                                  rounds=f['pretrain']['rounds'],
                                  steps_per_round=f['pretrain']['steps'],
                                  width=p['width'],
                                  batch_size=d['batch'],
                                  weight_decay=f['pretrain']['wd'],
                                  seed=seed)) for seed in seeds], workers, log)
            _DATA['pretrained'] = {k[-1]: v for k, v in pre.items()}
        jobs += _digit_jobs(p)
    rl = p.get('random_labels')
    if rl:
        _DATA['random'] = training.load_toy_cifar(
            rl['num_train'], size=rl['size'])
        for seed in seeds:
            for norm in rl['norms']:
                jobs.append(('rounds', ('random_labels', norm, seed),
                             dict(
                                 data='random',
                                 norm=norm,
                                 rounds=list(rl['rounds']),
                                 steps_per_round=rl['steps'],
                                 width=p['width'],
                                 batch_size=rl['batch'],
                                 weight_decay=rl['wd'],
                                 seed=seed,
                                 alpha=p['alpha'],
                                 _cost=len(rl['rounds']) * rl['steps'])))
    found = _pool_map(jobs, workers, log)
    _DATA.clear()
    if d:
        dg = out['digits']
        for exp in ('restarts', 'finetune'):
            if d.get(exp):
                dg[exp] = _collect(found, exp, d[exp].get('norms', p['norms']),
                                   seeds)
        if d.get('lr'):
            names = [
                f'{norm}, lr {lr:g}' for lr in d['lr']['values']
                for norm in d['lr']['norms']
            ]
            dg['lr'] = _collect(found, 'lr', names, seeds)
        if d.get('gamma_init'):
            dg['gamma_init'] = _gamma_init(found, d, seeds, dg)
        if d.get('optimizers'):
            # SGD with momentum 0.9 is the finetune experiment itself
            names = [
                f'{OPT_NAMES[o]}, {norm}' for o in d['optimizers']
                for norm in p['norms']
            ]
            opt = {
                f"{OPT_NAMES['sgd']}, {norm}": runs
                for norm, runs in dg.get('finetune', {}).items()
            }
            opt.update(_collect(found, 'optimizers', names, seeds))
            dg['optimizers'] = opt
        if d.get('early'):
            e = d['early']
            names = [
                f'{norm}, lr {lr:g}' for lr in e['lrs'] for norm in e['norms']
            ]
            dg['early'] = _collect(found, 'early', names, tuple(e['seeds']))
    if rl:
        out['random_labels']['restarts'] = _collect(found, 'random_labels',
                                                    rl['norms'], seeds)
    if out_dir:
        from .figures import training_figures
        out['figures'] = training_figures(out, out_dir)
    return out


def _gamma_init(found, d, seeds, dg):
    """{'<norm>, gamma0 <g>': runs} with gamma0 = 1 taken from the restarts
    experiment."""
    g = d['gamma_init']
    res = {}
    for norm in g['norms']:
        for gamma in sorted(set(g['values']) | {1.0}):
            name = f'{norm}, gamma0 {gamma:g}'
            if gamma == 1.0:
                if norm in dg.get('restarts', {}):
                    res[name] = dg['restarts'][norm]
            else:
                res[name] = [found[('gamma_init', name, s)] for s in seeds]
    return res


def run_lab(cfg: dict,
            mode: str = 'custom',
            out_dir: Optional[str] = None,
            training: bool = True,
            log: Callable = print,
            workers: int = 2) -> dict:
    """Run every part with the settings ``cfg`` (see :func:`load_settings`);
    figures go to ``out_dir`` when given.

    Returns
    the numbers (JSON-able), ``mode`` among them.
    """
    results = dict(mode=mode)
    results['theorem1'] = run_theorem1(cfg, out_dir)
    log(f"theorem1 slopes: {results['theorem1']['slopes']}")
    results['recovery'] = run_recovery(cfg, out_dir)
    log(f"recovery predicted {results['recovery']['predicted_step']} "
        f"observed {results['recovery']['observed_step']}")
    if cfg.get('rec_optimizers'):
        rec = run_optimizer_recovery(cfg)
        for name, r in rec['runs'].items():
            log(f'recovery under {name}: psBN observed '
                f"{r['psBN']['observed_step']} law "
                f"{r['psBN']['predicted_step']} approx "
                f"{r['psBN']['approx_step']}; BN observed "
                f"{r['BN']['observed_step']}")
    if training:
        results['training'] = run_training(cfg, out_dir, log, workers)
    if cfg.get('rec_optimizers'):
        if out_dir:
            from .figures import plot_optimizers
            rec['figure'] = plot_optimizers(
                rec,
                results.get('training', {}).get('digits',
                                                {}).get('optimizers'),
                osp.join(out_dir, 'lab_optimizers.png'))
        for r in rec['runs'].values():  # the curves are in the figure
            del r['sim']
            for kind in ('BN', 'psBN'):
                del r[kind]['law']
        results['optimizers'] = rec
    return results
