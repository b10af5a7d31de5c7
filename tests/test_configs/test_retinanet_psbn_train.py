# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""configs/retinanet_r50_psbn.py itself, trained as the README says
(tools/dist_train.sh CONFIG GPUS --auto-scale-lr), on the toy set at a small
scale: two CPU processes, psBN in the backbone, the collapse monitor on, and
pycocotools evaluation at the end."""
import glob
import json
import os.path as osp

import torch

from ..conftest import (REPO, TOOLS, free_port, iter_schedule, run_tool,
                        write_toy_config)

PSBN_CONFIG = osp.join(REPO, 'configs', 'retinanet_r50_psbn.py')

# Only what the toy data and a CPU need: the toy classes, a 128-px scale,
# no worker processes (any detector; tests/test_configs/
# test_fcos_faster_rcnn.py uses it too) ...
TOY_DATA = """
metainfo = dict(classes=('square', 'circle', 'triangle'))
img_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
"""
# ... and what RetinaNet needs besides: a 3-class head, no ImageNet weights
# (nothing may be downloaded). The monitor measures every iteration instead
# of every 50.
TOY_OVERRIDES = TOY_DATA + """
# (After the iteration schedule, whose `model` this replaces: keep its
# score_thr=0.0 so that pycocotools evaluates even an untrained model.)
model = dict(
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3),
    test_cfg=dict(score_thr=0.0))
custom_hooks = [dict(type='CollapseMonitorHook', interval=1)]
"""


def read_scalars(work_dir):
    runs = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert runs, f'no scalars.json under {work_dir}'
    with open(runs[-1]) as f:
        return [json.loads(line) for line in f]


def test_psbn_config_trains_on_two_processes_and_evaluates(toy_coco, tmp_path):
    cfg = write_toy_config(
        tmp_path / 'psbn_toy.py',
        toy_coco,
        base=PSBN_CONFIG,
        extra=iter_schedule(3) + TOY_OVERRIDES)
    work_dir = tmp_path / 'work'
    proc = run_tool([
        osp.join(TOOLS, 'dist_train.sh'), cfg, '2', '--work-dir', work_dir,
        '--auto-scale-lr'
    ],
                    env=dict(PORT=str(free_port())))
    log = proc.stdout
    assert proc.returncode == 0, log[-5000:]

    # 2 processes x 2 images = 4 of the base batch 16: lr 0.01 x 4/16.
    assert 'LR is set based on batch size of 16 and the current batch ' \
        'size is 4. Scaling the original LR by 0.25.' in log, log[-5000:]
    scalars = read_scalars(str(work_dir))
    lrs = [r['lr'] for r in scalars if 'lr' in r]
    # The iteration schedule warms up linearly from 0.1 x over 4 iterations.
    assert max(lrs) <= 0.0025 + 1e-9 and lrs[0] < lrs[-1], lrs

    # The model trained has psBN in the backbone (alpha in the checkpoint).
    sd = torch.load(work_dir / 'iter_3.pth', map_location='cpu')['state_dict']
    alphas = [k for k in sd if k.endswith('.alpha')]
    assert len(alphas) == 53 and all(k.startswith('backbone.') for k in alphas)

    # pycocotools evaluated it.
    assert 'Average Precision' in log
    val = [r for r in scalars if 'coco/bbox_mAP' in r]
    assert len(val) == 1 and 0.0 <= val[0]['coco/bbox_mAP'] <= 1.0

    # The collapse monitor logged its scalars (the logger drops 'train/').
    collapse = [r for r in scalars if 'collapse/collapsed' in r]
    assert len(collapse) >= 3, sorted(scalars[-1])
    for r in collapse:
        for key in ('collapsed', 'dead'):  # shares
            assert 0.0 <= r[f'collapse/{key}'] <= 1.0, (key, r)
        for key in ('recovered', 'entered_dead'):  # channel counts
            assert r[f'collapse/{key}'] >= 0, (key, r)
    sparsity = [
        r['collapse/sparsity'] for r in collapse if 'collapse/sparsity' in r
    ]
    assert sparsity and all(0.0 <= v <= 1.0 for v in sparsity)
    report = work_dir / 'collapse' / 'report.json'
    assert report.is_file(), sorted(p.name for p in work_dir.iterdir())
    with open(report) as f:
        report = json.load(f)
    # The 53 psBN layers of the backbone are measured (the head has no
    # norm layer), with alpha 0.1.
    psbn = [r for r in report['layers'] if r.get('kind') == 'psBN']
    assert len(psbn) == 53, report['layers'][:2]
    assert [r['iter'] for r in report['history']][-1] == 3
    assert {'gamma_hist.png', 'gamma_beta.png', 'history.png'
            } <= {p.name
                  for p in (work_dir / 'collapse').iterdir()}


def test_upstream_mmdet_train_tool_trains_the_psbn_config(toy_coco, tmp_path):
    """Mmdet's own tools/train.py (as installed: mmdet/.mim/tools), run from a
    folder outside this repository, builds psBN from the config's
    ``custom_imports`` alone and trains it."""
    import mmdet
    train = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    assert osp.isfile(train), train
    cfg = write_toy_config(
        tmp_path / 'psbn_toy.py',
        toy_coco,
        base=PSBN_CONFIG,
        extra=iter_schedule(2) + TOY_OVERRIDES)
    work_dir = tmp_path / 'work'
    proc = run_tool(
        [train, cfg, '--work-dir', str(work_dir)],
        cwd=str(tmp_path),
        env=dict(PYTHONPATH=''))
    assert proc.returncode == 0, proc.stdout[-5000:]
    sd = torch.load(work_dir / 'iter_2.pth', map_location='cpu')['state_dict']
    alphas = [k for k in sd if k.endswith('.alpha')]
    assert len(alphas) == 53
    assert (work_dir / 'collapse' / 'report.json').is_file()
