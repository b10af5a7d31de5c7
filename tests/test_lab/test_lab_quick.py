# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The lab's command in quick mode (what CI runs) and the training loop."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np

from mmdet_psbn.lab import training

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_training_rounds_measure_collapse():
    data = training.load_toy_cifar(num_train=64)
    assert data[0].shape == (64, 3, 16, 16)
    rows = training.train_rounds('psBN', [0.4, 0.4], 6, data, width=4,
                                 batch_size=16)
    assert [r['round'] for r in rows] == [0, 1, 2]
    assert rows[0]['collapsed'] == rows[0]['dead'] == 0.0
    for r in rows:
        assert 0 <= r['collapsed'] <= 1 and 0 <= r['dead'] <= 1
        # sparsity comes only from collapsed channels
        assert r['sparsity'] == 0 or r['collapsed'] > 0


def test_gamma_init_and_norms():
    for norm in training.NORMS:
        net = training.build_net(norm, width=4, gamma_init=0.5)
        gammas = [m.weight for m in net.modules()
                  if hasattr(m, 'running_mean')]
        assert gammas and all(np.allclose(g.detach(), 0.5) for g in gammas)


def test_quick_command_writes_figures_and_numbers(tmp_path):
    """``python tools/collapse_lab.py --quick``, as the README gives it."""
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'collapse_lab.py'),
         '--quick', '--out-dir', str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(tmp_path / 'lab_results_quick.json'))
    for name in ('lab_theorem1.png', 'lab_recovery.png',
                 'lab_restarts.png'):
        assert (tmp_path / name).stat().st_size > 10_000
    assert (tmp_path / 'lab_tables_quick.md').stat().st_size > 500
    assert res['recovery']['observed_step'] == \
        res['recovery']['predicted_step']
    assert abs(res['theorem1']['slopes']['eta'] - 2) < 0.15
    # Filter collapse under warm restarts (paper Fig. 3): after 4 rounds BN
    # has lost several times more filters than psBN, on every measure. (The
    # full run: BN 38 % collapsed, psBN 4 %; without the shift psBN would
    # be BN, ratio 1.)
    restarts = res['training']['experiments']['restarts']
    last = {norm: [run[-1] for run in runs]
            for norm, runs in restarts.items()}
    assert [r['round'] for r in restarts['BN'][0]] == [0, 1, 2, 3, 4]
    for key in ('collapsed', 'dead', 'sparsity'):
        bn = np.mean([r[key] for r in last['BN']])
        ps = np.mean([r[key] for r in last['psBN']])
        assert bn > 0.15 and bn > 3 * ps, (key, bn, ps)
        assert all(0 <= r[key] <= 1 for runs in restarts.values()
                   for run in runs for r in run)


def test_bad_threads_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'collapse_lab.py'),
         '--threads', '0', '--out-dir', str(tmp_path / 'out')],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert '--threads must be >= 1, got 0' in proc.stderr
    assert not (tmp_path / 'out').exists()
