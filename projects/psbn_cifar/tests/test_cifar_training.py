# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR training through tools/train.py and tools/dist_train.sh: restart
rounds, snapshots, per-round measures and the snapshot ensemble."""
import glob
import json
import os.path as osp

import numpy as np
import pytest
import torch
from cifar_test_utils import write_cifar_config
from mmengine.config import Config

from tests.conftest import TOOLS, free_port, run_tool


def read_scalars(work_dir):
    runs = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    assert runs, f'no scalars.json under {work_dir}'
    with open(runs[-1]) as f:
        return [json.loads(line) for line in f]


def direct_scores(cfg_path, snapshot, data_root):
    """Softmax scores of a snapshot on the test set, computed here without the
    hook's code: build the model, load, normalise, forward."""
    import psbn_cifar  # noqa: F401
    from psbn_cifar.registry import DATASETS, MODELS
    cfg = Config.fromfile(cfg_path)
    model_cfg = cfg.model.copy()
    model_cfg['data_preprocessor'] = cfg.data_preprocessor
    model = MODELS.build(model_cfg)
    sd = torch.load(
        snapshot, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(sd, strict=True)
    model.eval()
    ds = DATASETS.build(
        dict(type='CIFAR10', data_root=data_root, test_mode=True))
    imgs = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float()
    mean = torch.tensor(cfg.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((imgs - mean) / std, mode='tensor')
    return logits.softmax(1).numpy(), ds.gt_labels


@pytest.fixture(scope='module')
def restart_run(toy_cifar, tmp_path_factory):
    """ResNet-20 psBN, 2 rounds x 1 epoch of cosine restarts (4 iterations an
    epoch)."""
    tmp = tmp_path_factory.mktemp('restart')
    cfg = write_cifar_config(
        tmp / 'cfg.py',
        toy_cifar,
        'resnet20_psbn_restart9x100.py',
        extra='randomness = dict(seed=0)\n')
    work_dir = str(tmp / 'work')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', work_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]
    return dict(cfg=cfg, work_dir=work_dir, log=proc.stdout)


def test_restart_run_saves_a_snapshot_per_round(restart_run):
    snaps = osp.join(restart_run['work_dir'], 'snapshots')
    assert sorted(osp.basename(p) for p in glob.glob(snaps + '/*.pth')) == [
        'round_1.pth', 'round_2.pth'
    ]
    a, b = (
        torch.load(osp.join(snaps, f'round_{k}.pth'), weights_only=True)
        for k in (1, 2))
    assert a['meta'] == dict(round=1, epoch=1, iter=4)
    assert b['meta'] == dict(round=2, epoch=2, iter=8)
    assert 'backbone.layer3.2.bn2.alpha' in a['state_dict']
    assert not torch.equal(a['state_dict']['head.fc.weight'],
                           b['state_dict']['head.fc.weight'])


def test_lr_restarts_each_round(restart_run):
    lrs = {
        r['iter']: r['lr']
        for r in read_scalars(restart_run['work_dir']) if 'lr' in r
    }
    # Cosine from 0.1 within each 4-iteration round, back up at iter 5.
    assert lrs[1] == pytest.approx(0.1)
    assert lrs[2] < lrs[1] and lrs[4] < lrs[3] < lrs[2]
    assert lrs[5] == pytest.approx(0.1)


def test_per_round_accuracy_and_collapse_are_logged(restart_run):
    scalars = read_scalars(restart_run['work_dir'])
    rounds = [r for r in scalars if 'round/accuracy' in r]
    assert rounds and {'round/sparsity', 'round/collapsed', 'round/dead'
                       } <= set(rounds[-1])
    assert any('collapse/sparsity' in r for r in scalars)
    with open(osp.join(restart_run['work_dir'], 'snapshots',
                       'rounds.json')) as f:
        report = json.load(f)
    assert [r['round'] for r in report['rounds']] == [1, 2]
    val = [r['accuracy/top1'] for r in scalars if 'accuracy/top1' in r]
    # The hook's accuracy of each round is the ValLoop's (same weights).
    assert [r['accuracy'] for r in report['rounds']] == pytest.approx(val)
    assert 'ensemble of rounds [1, 2]' in restart_run['log']


def test_ensemble_matches_direct_computation(restart_run, toy_cifar):
    snaps = osp.join(restart_run['work_dir'], 'snapshots')
    with open(osp.join(snaps, 'rounds.json')) as f:
        report = json.load(f)
    scores, labels = zip(*(direct_scores(
        restart_run['cfg'], osp.join(snaps, f'round_{k}.pth'), toy_cifar)
                           for k in (1, 2)))
    for k, s in enumerate(scores, 1):
        np.testing.assert_allclose(
            np.load(osp.join(snaps, f'round_{k}_scores.npy')), s, atol=1e-5)
        assert report['rounds'][k - 1]['accuracy'] == pytest.approx(
            100 * (s.argmax(1) == labels[0]).mean())
    expected = 100 * (np.mean(scores, 0).argmax(1) == labels[0]).mean()
    assert report['ensemble'] == dict(
        rounds=[1, 2], accuracy=pytest.approx(expected))

    out = osp.join(snaps, 'ens.json')
    proc = run_tool([
        'tools/ensemble_eval.py', restart_run['cfg'], '--work-dir',
        restart_run['work_dir'], '--last', '2', '--out', out
    ])
    assert proc.returncode == 0, proc.stdout[-5000:]
    with open(out) as f:
        tool = json.load(f)
    assert tool['ensemble'] == pytest.approx(expected)
    assert [osp.basename(p)
            for p in tool['snapshots']] == ['round_1.pth', 'round_2.pth']


@pytest.mark.parametrize('base,extra', [
    ('vgg16bn_psbn_restart9x100.py',
     'model = dict(backbone=dict(width_mult=0.125), '
     'head=dict(in_channels=64))\n'),
    ('resnet56_bn-lrelu_restart9x100.py', ''),
])
def test_other_families_train(toy_cifar, tmp_path, base, extra):
    """VGG16 (psBN, narrow) and ResNet-56 (BN + LeakyReLU): one round of two
    iterations."""
    cfg = write_cifar_config(
        tmp_path / 'cfg.py',
        toy_cifar,
        base,
        rounds=1,
        batch_size=100,
        extra=extra)
    work_dir = str(tmp_path / 'w')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', work_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]
    losses = [r['loss'] for r in read_scalars(work_dir) if 'loss' in r]
    assert len(losses) == 2 and np.isfinite(losses).all()
    sd = torch.load(
        osp.join(work_dir, 'snapshots', 'round_1.pth'),
        weights_only=True)['state_dict']
    if 'vgg' in base:
        assert 'backbone.features.0.bn.alpha' in sd
    else:
        assert 'backbone.layer3.8.bn2.weight' in sd
        assert 'negative_slope=0.01' in proc.stdout


def test_dist_train_two_processes_ensemble(toy_cifar, tmp_path):
    """tools/dist_train.sh CONFIG 2 (gloo on CPU): each rank predicts half the
    test set; rank 0 writes the snapshots and the same ensemble a direct
    computation gives."""
    cfg = write_cifar_config(
        tmp_path / 'cfg.py',
        toy_cifar,
        'resnet20_bn_restart9x100.py',
        batch_size=25)
    work_dir = str(tmp_path / 'w')
    proc = run_tool(
        [osp.join(TOOLS, 'dist_train.sh'), cfg, '2', '--work-dir', work_dir],
        env=dict(PORT=str(free_port())))
    assert proc.returncode == 0, proc.stdout[-5000:]
    snaps = osp.join(work_dir, 'snapshots')
    with open(osp.join(snaps, 'rounds.json')) as f:
        report = json.load(f)
    scores, labels = zip(
        *(direct_scores(cfg, osp.join(snaps, f'round_{k}.pth'), toy_cifar)
          for k in (1, 2)))
    np.testing.assert_allclose(
        np.load(osp.join(snaps, 'round_2_scores.npy')), scores[1], atol=1e-5)
    expected = 100 * (np.mean(scores, 0).argmax(1) == labels[0]).mean()
    assert report['ensemble']['accuracy'] == pytest.approx(expected)
    # 200 images / (2 ranks x 25) = 4 iterations an epoch.
    assert report['rounds'][1]['iter'] == 8
