# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Two "nodes" on this machine: ``tools/dist_train.sh`` started twice with
``NNODES=2``, ``NODE_RANK=0/1`` and ``MASTER_ADDR=127.0.0.1``, one CPU process
each (gloo), as ``docs/cluster.md`` tells users to start two real nodes.

Both nodes share one work dir, as they would on a cluster's shared file
system. The run trains the toy psBN RetinaNet with the collapse monitor;
only global rank 0 writes (every file write of each rank is recorded by
``tests/helpers/write_audit.py``); the result equals the one-node
2-process run's; and after both nodes are killed, the same two commands
resume it.
"""
import glob
import os
import os.path as osp
import re
import signal

from ..conftest import (SLIM_PSBN_MODEL, TOOLS, final_params_equal, free_port,
                        iter_schedule, start_tool, write_toy_config)

ITERS = 8
LOGGED = re.compile(r'Iter\(train\) \[\s*(\d+)/%d\]' % ITERS)

#: The slim toy psBN RetinaNet with the collapse monitor; a checkpoint
#: every 4 iterations.
EXTRA = iter_schedule(
    ITERS, ckpt=4, keep=2) + SLIM_PSBN_MODEL + """
custom_imports = dict(imports=['mmdet_psbn', 'write_audit'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='CollapseMonitorHook', interval=2)]
"""


def _launch(cfg, work_dir, gpus, env):
    """``tools/dist_train.sh CONFIG GPUS --work-dir DIR --resume``."""
    return start_tool([
        osp.join(TOOLS, 'dist_train.sh'), cfg, gpus, '--work-dir', work_dir,
        '--resume'
    ], env)


def _descendants(pid):
    """``pid`` and every process under it (torchrun starts its workers in
    sessions of their own, so a process group does not hold them)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _kill_node(proc):
    """SIGKILL a node's launcher and its workers at once, as slurm ends an
    allocation."""
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _two_nodes(cfg, work_dir, audit_dir, kill_after=None):
    """Start node 1, then node 0, as two separate commands; with
    ``kill_after``, SIGKILL both nodes' processes once node 0 logs that
    iteration.

    Returns ((status, output) of node 0, of node 1).
    """
    port = str(free_port())
    common = dict(
        NNODES='2',
        MASTER_ADDR='127.0.0.1',
        PORT=port,
        PSBN_WRITE_AUDIT_DIR=audit_dir)
    node1 = _launch(cfg, work_dir, 1, dict(common, NODE_RANK='1'))
    node0 = _launch(cfg, work_dir, 1, dict(common, NODE_RANK='0'))
    out0 = []
    try:
        for line in node0.stdout:
            out0.append(line)
            m = LOGGED.search(line)
            if kill_after and m and int(m.group(1)) >= kill_after:
                for node in (node0, node1):
                    _kill_node(node)
                break
        rest0, _ = node0.communicate(timeout=300)
        out1, _ = node1.communicate(timeout=300)
    finally:
        for node in (node0, node1):
            if node.poll() is None:
                _kill_node(node)
                node.wait()
    return ((node0.returncode, ''.join(out0) + rest0), (node1.returncode,
                                                        out1))


def _written(audit_dir, rank, under):
    """What ``rank`` wrote under the folder ``under``."""
    path = osp.join(audit_dir, f'rank{rank}.txt')
    if not osp.exists(path):
        return []
    with open(path) as f:
        return [
            line.strip() for line in f
            if line.split(' ', 1)[1].strip().startswith(str(under) + os.sep)
        ]


def test_two_nodes_on_localhost_train_resume_and_equal_one_node(
        toy_coco, tmp_path):
    cfg = write_toy_config(tmp_path / 'cfg.py', toy_coco, extra=EXTRA)
    work_dir, audit = str(tmp_path / 'two_nodes'), tmp_path / 'audit'
    audit.mkdir()

    # Both nodes killed (a lost allocation) after the checkpoint at 4.
    (s0, log0), (s1, log1) = _two_nodes(
        cfg, work_dir, str(audit), kill_after=5)
    assert s0 == -signal.SIGKILL, log0[-3000:]
    assert 'world_size: 2' in log0 or "'world_size': 2" in log0 or \
        'Distributed launcher: pytorch' in log0, log0[-3000:]
    # The same two commands again: both nodes resume after iteration 4.
    (s0, log0), (s1, log1) = _two_nodes(cfg, work_dir, str(audit))
    assert s0 == 0, log0[-5000:]
    assert s1 == 0, log1[-5000:]
    assert 'resumed epoch: 0, iter: 4' in log0, log0[-5000:]
    assert f'Iter(train) [{ITERS}/{ITERS}]' in log0

    # Global rank 0 wrote the checkpoints, the logs and the collapse
    # report; rank 1 (node 1) wrote no file in the shared work dir, and made
    # only folders that rank 0 made too (mmengine's log folder).
    written0 = _written(audit, 0, work_dir)
    for part in ('.iter_4.pth.', 'last_checkpoint', '.log', 'scalars.json',
                 'collapse/.report.json.', 'collapse/history.png'):
        assert any(part in w for w in written0), (part, written0)
    written1 = _written(audit, 1, work_dir)
    assert all(w.startswith('os.mkdir ') for w in written1), written1
    assert set(written1) <= set(written0), written1
    files = {
        osp.relpath(p, work_dir)
        for p in glob.glob(f'{work_dir}/**/*', recursive=True) if osp.isfile(p)
    }
    assert {'iter_4.pth', f'iter_{ITERS}.pth'} <= files, files
    assert osp.isfile(osp.join(work_dir, 'collapse', 'report.json')), files

    # The same training on one node with two processes.
    one_node = str(tmp_path / 'one_node')
    proc = _launch(cfg, one_node, 2, dict(PORT=str(free_port())))
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-5000:]

    two = final_params_equal(work_dir, one_node, ITERS)
    assert any('alpha' in k for k in two)
