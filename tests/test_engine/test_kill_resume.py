# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Kill ``tools/train.py`` at random points, ``--resume``, lose nothing.

A toy psBN RetinaNet is trained for :data:`ITERS` iterations with a
checkpoint every 2 and ``max_keep_ckpts=1`` (the setting where mmengine
alone can lose the whole run, compat fix 3). Each round starts the same
command with ``--resume`` and ends it with a kill at a point drawn from
one seed:

- ``sigkill``: SIGKILL from outside, a random delay after a random
  iteration is logged (mid-iteration, mid-save, mid-log: wherever it
  lands);
- ``during_save``: the kernel ends the process at a random byte of a
  random checkpoint write (``tests/helpers/kill_during_save_hook.py``).

After every kill each checkpoint on disk is complete, and the next
``--resume`` continues from the newest of them; the last one runs to the
end, whose parameters must equal an uninterrupted run's. The seed is
printed and put in every assertion message; ``PSBN_KILL_SEED=<seed>``
replays a run.
"""
import os
import os.path as osp
import random
import re
import signal
import time

from mmdet_psbn.compat import is_complete_checkpoint
from ..conftest import (SLIM_PSBN_MODEL, final_params_equal, iter_schedule,
                        start_tool, write_toy_config)

ITERS = 12
ROUNDS = 3
LOGGED = re.compile(r'Iter\(train\) \[\s*(\d+)/%d\]' % ITERS)
RESUMED = re.compile(r'resumed epoch: 0, iter: (\d+)')

#: The slim toy psBN RetinaNet, a checkpoint every 2 iterations, one kept.
EXTRA = iter_schedule(
    ITERS, ckpt=2, keep=1) + SLIM_PSBN_MODEL + """
custom_imports = dict(imports=['mmdet_psbn', 'kill_during_save_hook'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='KillDuringSaveHook')]
"""


def _start(cfg, work_dir, env=None):
    # No kill unless asked (an empty spec is none).
    return start_tool(
        ['tools/train.py', cfg, '--work-dir', work_dir, '--resume'],
        dict(dict(PSBN_KILL_DURING_SAVE=''), **(env or {})))


def _run(proc, kill_after=None, delay=0.0):
    """Read ``proc``'s output; with ``kill_after``, SIGKILL it ``delay``
    seconds after that iteration is logged.

    Returns (status, output).
    """
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            m = LOGGED.search(line)
            if kill_after is not None and m and int(m.group(1)) >= kill_after:
                time.sleep(delay)
                proc.kill()
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, ''.join(out) + rest


def _checkpoints(work_dir):
    return sorted(
        f for f in os.listdir(work_dir) if re.fullmatch(r'iter_\d+\.pth', f))


def _check_complete(work_dir, where):
    """Every checkpoint on disk is whole."""
    for f in _checkpoints(work_dir):
        assert is_complete_checkpoint(osp.join(work_dir, f)), (where, f)


def _resume_point(work_dir):
    """The iteration ``--resume`` must continue after: the one
    ``last_checkpoint`` names if that is a complete checkpoint, else (a kill
    while it was written) the newest complete checkpoint's; 0 if none."""
    names = _checkpoints(work_dir)
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            recorded = osp.basename(f.read().strip())
    except FileNotFoundError:
        recorded = None
    if recorded not in names:
        recorded = max(names, key=lambda n: int(n[5:-4]), default=None)
    return int(recorded[5:-4]) if recorded else 0


def test_sigkill_at_random_points_then_resume_loses_nothing(
        toy_coco, tmp_path):
    seed = int(os.environ.get('PSBN_KILL_SEED') or random.randrange(10**6))
    print(f'kill points drawn from PSBN_KILL_SEED={seed}')
    rng = random.Random(seed)
    cfg = write_toy_config(tmp_path / 'cfg.py', toy_coco, extra=EXTRA)
    work_dir = str(tmp_path / 'killed')
    kinds = ['during_save', 'sigkill', rng.choice(['during_save', 'sigkill'])]
    expected_start, killed_in_save = 0, False
    for round_, kind in enumerate(kinds):
        where = f'seed {seed}, round {round_} ({kind})'
        if kind == 'during_save':
            saves_left = (ITERS - expected_start) // 2
            nth, fraction = rng.randint(1, saves_left), rng.uniform(0.05, 0.95)
            where += f', save {nth} at {fraction:.3f}'
            status, log = _run(
                _start(cfg, work_dir,
                       dict(PSBN_KILL_DURING_SAVE=f'{nth}:{fraction}')))
            assert status == -signal.SIGXFSZ, f'{where}\n{log[-3000:]}'
            _check_complete(work_dir, where)
            # The kernel stopped the write at that byte: the partial file is
            # a hidden temporary one, never a checkpoint's name.
            partial = [f for f in os.listdir(work_dir) if f.endswith('.tmp')]
            assert partial, where
            for f in partial:
                os.remove(f'{work_dir}/{f}')  # what a user may delete
            killed_in_save = True
        else:
            after = rng.randint(expected_start + 1, ITERS - 1)
            delay = rng.uniform(0.0, 0.6)
            where += f', {delay:.2f} s after iteration {after}'
            status, log = _run(
                _start(cfg, work_dir), kill_after=after, delay=delay)
            assert status in (-signal.SIGKILL, 0), f'{where}\n{log[-3000:]}'
        # Each round resumed where the previous one left its newest
        # complete checkpoint.
        resumed = RESUMED.search(log)
        assert (int(resumed.group(1)) if resumed else 0) == expected_start, \
            f'{where}\n{log[-3000:]}'
        _check_complete(work_dir, where)
        expected_start = _resume_point(work_dir)
        if expected_start == ITERS:
            break
    assert killed_in_save

    status, log = _run(_start(cfg, work_dir))
    assert status == 0, f'seed {seed}, final resume\n{log[-3000:]}'
    if expected_start:
        assert f'resumed epoch: 0, iter: {expected_start}' in log, seed

    full_dir = str(tmp_path / 'full')
    status, log = _run(_start(cfg, full_dir))
    assert status == 0, log[-3000:]
    resumed = final_params_equal(work_dir, full_dir, ITERS, f'seed {seed}: ')
    assert any('alpha' in k for k in resumed)
