# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Bad input to the tools: a clear message, exit status 2, no work dir."""
import os.path as osp

import pytest

from ..conftest import REPO, TOOLS, run_tool, write_toy_config

# An old path of a CIFAR config (forwarding to projects/psbn_cifar/configs).
CIFAR_CONFIG = 'resnet20_psbn_restart9x100.py'


def assert_refused(proc, *fragments):
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert 'Traceback' not in proc.stdout, proc.stdout[-3000:]
    for fragment in fragments:
        assert fragment in proc.stdout, proc.stdout[-3000:]


def test_missing_config(tmp_path):
    work_dir = tmp_path / 'work'
    proc = run_tool(
        ['tools/train.py', tmp_path / 'nope.py', '--work-dir', work_dir])
    assert_refused(proc, 'nope.py', 'does not exist')
    assert not work_dir.exists()


def test_missing_data_root_names_path_and_fix(tmp_path):
    missing = str(tmp_path / 'no_such_coco') + '/'
    cfg = write_toy_config(tmp_path / 'cfg.py', missing)
    work_dir = tmp_path / 'work'
    proc = run_tool(['tools/train.py', cfg, '--work-dir', work_dir])
    assert_refused(proc, missing, 'tools/misc/make_toy_coco.py', 'COCO 2017')
    assert not work_dir.exists()


def test_missing_annotation_file(toy_coco, tmp_path):
    cfg = write_toy_config(
        tmp_path / 'cfg.py',
        toy_coco,
        extra='train_dataloader = dict(dataset=dict(data_root=data_root, '
        "ann_file='x.json'))\n")
    proc = run_tool(['tools/train.py', cfg, '--work-dir', tmp_path / 'w'])
    assert_refused(proc, 'train_dataloader.dataset.ann_file',
                   osp.join(toy_coco, 'x.json'))


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_corrupt_checkpoint(toy_coco, tmp_path, tool):
    cfg = write_toy_config(tmp_path / 'cfg.py', toy_coco)
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'PK\x03\x04 this is not a whole checkpoint')
    work_dir = tmp_path / 'work'
    if tool == 'train':
        args = ['tools/train.py', cfg, '--resume', bad]
    else:
        args = ['tools/test.py', cfg, bad]
    proc = run_tool(args + ['--work-dir', work_dir])
    assert_refused(proc, str(bad), 'cannot be read', 'corrupt')
    assert not work_dir.exists()


def test_typo_in_cfg_options(toy_coco, tmp_path):
    cfg = write_toy_config(tmp_path / 'cfg.py', toy_coco)
    proc = run_tool([
        'tools/train.py', cfg, '--work-dir', tmp_path / 'w', '--cfg-options',
        'model.backbone.dpth=18'
    ])
    assert_refused(proc, "'model.backbone.dpth'",
                   "did you mean 'model.backbone.depth'")


@pytest.mark.parametrize('gpus', ['0', '-1', 'two', '1.5'])
def test_dist_train_rejects_bad_gpus(toy_coco, tmp_path, gpus):
    cfg = write_toy_config(tmp_path / 'cfg.py', toy_coco)
    proc = run_tool([osp.join(TOOLS, 'dist_train.sh'), cfg, gpus])
    assert_refused(proc, f"GPUS must be a positive integer, got '{gpus}'")


def test_dist_train_rejects_missing_config(tmp_path):
    proc = run_tool([osp.join(TOOLS, 'dist_train.sh'), tmp_path / 'x.py', '2'])
    assert_refused(proc, 'config', 'x.py', 'does not exist')


def test_slurm_train_rejects_bad_gpus(toy_coco, tmp_path):
    cfg = write_toy_config(tmp_path / 'cfg.py', toy_coco)
    proc = run_tool([
        osp.join(TOOLS, 'slurm_train.sh'), 'part', 'job', cfg, tmp_path / 'w'
    ],
                    env=dict(GPUS='eight'))
    assert_refused(proc, "GPUS must be a positive integer, got 'eight'")


def test_missing_cifar_root_gives_the_cifar_hint(tmp_path):
    """A dataset class checks its own root (CIFAR10.missing_data)."""
    missing = str(tmp_path / 'no_cifar')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        f"_base_ = {osp.join(REPO, 'configs', 'cifar10', CIFAR_CONFIG)!r}\n"
        f'train_dataloader = dict(dataset=dict(data_root={missing!r}))\n')
    work_dir = tmp_path / 'work'
    proc = run_tool(['tools/train.py', cfg, '--work-dir', work_dir])
    assert_refused(proc, missing, 'cifar-10-batches-py',
                   'tools/misc/make_toy_cifar.py')
    assert 'COCO' not in proc.stdout
    assert not work_dir.exists()
