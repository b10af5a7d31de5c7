# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""tools/train.py, tools/test.py and tools/dist_train.sh, run as a user
runs them: real Runner, real mmdet RetinaNet-R50, real pycocotools."""
import glob
import json
import os.path as osp
import pickle
import shutil

import pytest
import torch

from ..conftest import (TOOLS, free_port, iter_schedule, run_tool,
                        write_toy_config)


def read_scalars(work_dir):
    """The JSON scalar log of the run in ``work_dir`` (one timestamp dir)."""
    runs = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert runs, f'no scalars.json under {work_dir}'
    with open(runs[-1]) as f:
        return [json.loads(line) for line in f]


def train_losses(scalars):
    return {r['iter']: r['loss'] for r in scalars if 'loss' in r}


def state_dict(path):
    return torch.load(path, map_location='cpu')['state_dict']


@pytest.fixture(scope='module')
def trained(toy_coco, tmp_path_factory):
    """One short training run (4 iterations, then validation)."""
    tmp = tmp_path_factory.mktemp('trained')
    cfg = write_toy_config(tmp / 'cfg.py', toy_coco, extra=iter_schedule(4))
    work_dir = str(tmp / 'work')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', work_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]
    return dict(cfg=cfg, work_dir=work_dir, log=proc.stdout)


def test_train_runs_and_evaluates_with_pycocotools(trained):
    ckpt = osp.join(trained['work_dir'], 'iter_4.pth')
    assert osp.isfile(ckpt)
    scalars = read_scalars(trained['work_dir'])
    losses = train_losses(scalars)
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    # CocoMetric ran and logged its summary (pycocotools' COCOeval).
    val = [r for r in scalars if 'coco/bbox_mAP' in r]
    assert len(val) == 1
    assert 0.0 <= val[0]['coco/bbox_mAP'] <= 1.0
    assert 'Average Precision' in trained['log']
    # The model really is mmdet's RetinaNet with a ResNet-50 backbone.
    sd = state_dict(ckpt)
    assert 'backbone.layer4.2.conv3.weight' in sd
    assert sd['bbox_head.retina_cls.weight'].shape[0] == 9 * 3


def test_test_tool_evaluates_and_dumps(trained, tmp_path):
    out = tmp_path / 'results.pkl'
    proc = run_tool([
        'tools/test.py', trained['cfg'],
        osp.join(trained['work_dir'], 'iter_4.pth'), '--work-dir',
        str(tmp_path / 'test_work'), '--out',
        str(out)
    ])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'coco/bbox_mAP' in proc.stdout
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 8  # one entry per validation image
    assert {'img_id', 'pred_instances'} <= set(results[0])


def test_resume_matches_uninterrupted_run(toy_coco, tmp_path):
    """Stop after 3 iterations, resume with --resume, finish at 6: the same
    parameters and the same losses as 6 iterations in one go.

    Upstream (mmengine 0.10.7 + torch >= 2.6) the resume itself fails; see
    tests/test_compat.py for the bug in isolation.
    """
    full_cfg = write_toy_config(
        tmp_path / 'full.py', toy_coco, extra=iter_schedule(6, ckpt=3))
    part_cfg = write_toy_config(
        tmp_path / 'part.py', toy_coco, extra=iter_schedule(3, ckpt=3))
    full_dir, part_dir = str(tmp_path / 'full'), str(tmp_path / 'part')

    proc = run_tool(['tools/train.py', full_cfg, '--work-dir', full_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]
    proc = run_tool(['tools/train.py', part_cfg, '--work-dir', part_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert not osp.exists(osp.join(part_dir, 'iter_6.pth'))
    proc = run_tool([
        'tools/train.py', full_cfg, '--work-dir', part_dir, '--resume',
        osp.join(part_dir, 'iter_3.pth')
    ])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'resumed epoch: 0, iter: 3' in proc.stdout

    full, resumed = (
        state_dict(osp.join(d, 'iter_6.pth')) for d in (full_dir, part_dir))
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], msg=key)
    full_losses = train_losses(read_scalars(full_dir))
    resumed_losses = train_losses(read_scalars(part_dir))
    assert sorted(resumed_losses) == [4, 5, 6]
    for it in (4, 5, 6):
        assert resumed_losses[it] == pytest.approx(full_losses[it], rel=1e-5)


def test_resume_auto_picks_latest(trained, toy_coco, tmp_path):
    """``--resume`` without a value resumes from work_dir/last_checkpoint."""
    cfg = write_toy_config(
        tmp_path / 'cfg.py', toy_coco, extra=iter_schedule(5, ckpt=5))
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    ckpt = work_dir / 'iter_4.pth'
    shutil.copy(osp.join(trained['work_dir'], 'iter_4.pth'), ckpt)
    (work_dir / 'last_checkpoint').write_text(str(ckpt))
    proc = run_tool(
        ['tools/train.py', cfg, '--work-dir', work_dir, '--resume'])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'resumed epoch: 0, iter: 4' in proc.stdout
    assert (work_dir / 'iter_5.pth').is_file()


def test_dist_train_two_cpu_processes(toy_coco, tmp_path):
    """tools/dist_train.sh CONFIG 2 on CPU: gloo, two ranks, identical
    parameters afterwards, and only rank 0 writes checkpoints and logs."""
    dump = tmp_path / 'dump'
    dump.mkdir()
    cfg = write_toy_config(
        tmp_path / 'cfg.py',
        toy_coco,
        extra=iter_schedule(3) + f"""
custom_imports = dict(imports=['mmdet_psbn', 'param_dump_hook'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='ParamDumpHook', out_dir={str(dump)!r})]
""")
    work_dir = tmp_path / 'work'
    proc = run_tool(
        [osp.join(TOOLS, 'dist_train.sh'), cfg, '2', '--work-dir', work_dir],
        env=dict(PORT=str(free_port())))
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "'backend': 'gloo'" in proc.stdout or 'gloo' in proc.stdout

    p0 = torch.load(dump / 'params_rank0.pt')
    p1 = torch.load(dump / 'params_rank1.pt')
    assert p0.keys() == p1.keys() and len(p0) > 100
    for key in p0:
        assert torch.equal(p0[key], p1[key]), key
    # Each rank saw different images (DefaultSampler shards by rank), so
    # equality means the gradients really were all-reduced.

    files = sorted(
        osp.relpath(p, work_dir)
        for p in glob.glob(str(work_dir / '**' / '*'), recursive=True)
        if osp.isfile(p))
    logs = [f for f in files if f.endswith('.log')]
    assert len(logs) == 1, files
    assert [f for f in files if f.endswith('.pth')] == ['iter_3.pth']
    assert 'world_size: 2' in open(osp.join(work_dir, logs[0])).read() or \
        'Distributed launcher: pytorch' in open(osp.join(work_dir,
                                                         logs[0])).read()
