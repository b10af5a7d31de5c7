# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""PreemptionCheckpointHook: SIGTERM to a real ``tools/train.py`` saves the
current iteration, and ``--resume`` ends where an uninterrupted run does."""
import os
import os.path as osp
import re
import signal
import sys

import pytest
import torch

from mmdet_psbn.engine.hooks.preemption_hook import (EXIT_PREEMPTED,
                                                     PreemptionCheckpointHook)
from mmdet_psbn.utils.io import load_checkpoint
from ..conftest import (TOOLS, final_params_equal, free_port, iter_schedule,
                        run_tool, start_tool, write_toy_config)

ITERS = 12
LOGGED = re.compile(r'Iter\(train\) \[\s*(\d+)/%d\]' % ITERS)


def test_exit_code_is_checked():
    assert EXIT_PREEMPTED == 143
    assert PreemptionCheckpointHook(exit_code=None).exit_code is None
    for bad in (-1, 256, 1.0, True, '143'):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            PreemptionCheckpointHook(exit_code=bad)


def train_until_sigterm(args, after, env=None):
    """Start ``args`` (a training command), send SIGTERM to its process once
    iteration ``after`` is logged; return (exit status, output, last iteration
    logged before the signal)."""
    proc = start_tool(args, env)
    out, seen = [], 0
    try:
        for line in proc.stdout:
            out.append(line)
            m = LOGGED.search(line)
            if m:
                seen = int(m.group(1))
                if seen >= after:
                    proc.send_signal(signal.SIGTERM)
                    break
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, ''.join(out) + rest, seen


def test_sigterm_saves_current_iteration_and_resume_is_exact(
        toy_coco, tmp_path):
    cfg = write_toy_config(
        tmp_path / 'cfg.py', toy_coco, extra=iter_schedule(ITERS, ckpt=100))
    full_dir, cut_dir = str(tmp_path / 'full'), str(tmp_path / 'cut')

    status, log, seen = train_until_sigterm([
        sys.executable, 'tools/train.py', cfg, '--work-dir', cut_dir,
        '--save-on-sigterm'
    ],
                                            after=3)
    assert status == EXIT_PREEMPTED, log[-5000:]
    assert 3 <= seen < ITERS
    with open(osp.join(cut_dir, 'last_checkpoint')) as f:
        path = f.read().strip()
    m = re.fullmatch(r'iter_(\d+)\.pth', osp.basename(path))
    assert m, path
    k = int(m.group(1))
    # The iteration in flight when the signal came (or the next one),
    # logged before the stop; no regular checkpoint (interval 100).
    assert seen <= k < ITERS
    assert max(int(i) for i in LOGGED.findall(log)) == k
    assert 'SIGTERM received; saved iteration %d' % k in log
    assert sorted(f for f in os.listdir(cut_dir)
                  if f.endswith('.pth')) == [f'iter_{k}.pth']
    ckpt = load_checkpoint(path)
    assert ckpt['meta']['iter'] == k
    assert {'state_dict', 'optimizer', 'param_schedulers'} <= set(ckpt)

    proc = run_tool(['tools/train.py', cfg, '--work-dir', cut_dir, '--resume'])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert f'resumed epoch: 0, iter: {k}' in proc.stdout
    proc = run_tool(['tools/train.py', cfg, '--work-dir', full_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]

    final_params_equal(cut_dir, full_dir, ITERS)


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_iteration(
        toy_coco, tmp_path):
    """torchrun forwards SIGTERM to both CPU workers: they agree on one
    iteration, rank 0 saves it, and both end with those parameters."""
    dump = tmp_path / 'dump'
    dump.mkdir()
    cfg = write_toy_config(
        tmp_path / 'cfg.py',
        toy_coco,
        extra=iter_schedule(ITERS, ckpt=100) + f"""
custom_imports = dict(imports=['mmdet_psbn', 'param_dump_hook'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='ParamDumpHook', out_dir={str(dump)!r})]
""")
    work_dir = str(tmp_path / 'work')
    status, log, seen = train_until_sigterm([
        osp.join(TOOLS, 'dist_train.sh'), cfg, '2', '--work-dir', work_dir,
        '--save-on-sigterm'
    ],
                                            after=2,
                                            env=dict(PORT=str(free_port())))
    # torchrun itself ends with its SignalException (status 1).
    assert status != 0, log[-5000:]
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        path = f.read().strip()
    k = int(re.fullmatch(r'iter_(\d+)\.pth', osp.basename(path)).group(1))
    assert seen <= k < ITERS
    saved = load_checkpoint(path)['state_dict']
    # ParamDumpHook's after_run: each rank left the loop after iteration k.
    for rank in (0, 1):
        params = torch.load(dump / f'params_rank{rank}.pt')
        assert params.keys() <= saved.keys() and len(params) > 100
        for key, value in params.items():
            assert torch.equal(value, saved[key]), (rank, key)
