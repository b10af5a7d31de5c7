# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Fixtures shared by the test suite.

Nothing here downloads anything: detection data comes from
:func:`mmdet_psbn.datasets.make_toy_coco`, made once per session.
"""
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
HELPERS = osp.join(REPO, 'tests', 'helpers')
TOY_CONFIG = osp.join(REPO, 'configs', 'toy', 'retinanet_r50_fpn_toy.py')


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory):
    """A small toy COCO root (16 train / 8 val images of 128 px)."""
    from mmdet_psbn.datasets import make_toy_coco
    root = str(tmp_path_factory.mktemp('data') / 'toy_coco')
    make_toy_coco(root, num_train=16, num_val=8)
    return root + '/'


def write_toy_config(path, data_root, base=TOY_CONFIG, extra=''):
    """Write a config that inherits ``base`` and reads ``data_root``.

    mmengine resolves ``data_root`` inside the base when it is parsed, so
    every place that uses it is overridden here.
    """
    text = textwrap.dedent(f"""\
        _base_ = {base!r}
        data_root = {data_root!r}
        train_dataloader = dict(dataset=dict(data_root=data_root))
        val_dataloader = dict(dataset=dict(data_root=data_root))
        test_dataloader = val_dataloader
        val_evaluator = dict(
            ann_file=data_root + 'annotations/instances_val2017.json')
        test_evaluator = val_evaluator
        """) + textwrap.dedent(extra)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


#: A few iterations instead of epochs: what most training tests need.
ITER_SCHEDULE = """
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters},
                 val_interval={iters})
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                        begin=0, end=4)]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval={ckpt}, max_keep_ckpts={keep}))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
# Keep every detection, so that pycocotools evaluates even an untrained model
# (at the default 0.05 nothing survives, and CocoMetric skips evaluation).
model = dict(test_cfg=dict(score_thr=0.0))
"""


def iter_schedule(iters, ckpt=None, keep=5):
    return ITER_SCHEDULE.format(iters=iters, ckpt=ckpt or iters, keep=keep)


#: After :func:`iter_schedule`: the toy RetinaNet slimmed for tests that
#: train it several times (R18 with psBN, a 64-channel FPN and head).
SLIM_PSBN_MODEL = """
model = dict(
    backbone=dict(depth=18, norm_cfg=dict(type='psBN', requires_grad=True)),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=1),
    test_cfg=dict(score_thr=0.0))
"""


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool_env(env=None):
    """The environment the tools run in: ``python`` in the shell scripts is
    this interpreter (``PYTHON``), output unbuffered, ``tests/helpers``
    importable (``custom_imports`` of test hooks); then ``env``."""
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    full_env['PYTHONPATH'] = os.pathsep.join(
        [HELPERS, full_env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    full_env.update(env or {})
    return full_env


def _command(args):
    args = [sys.executable] + list(args) if args[0].endswith('.py') else args
    return [str(a) for a in args]


def run_tool(args, cwd=None, env=None, timeout=600):
    """Run a tool as a user would and return the CompletedProcess (stdout and
    stderr together)."""
    return subprocess.run(
        _command(args),
        cwd=cwd or REPO,
        env=tool_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)


def start_tool(args, env=None):
    """Start a tool as :func:`run_tool` runs it, and return its Popen, whose
    ``stdout`` (stderr too) a test reads line by line."""
    return subprocess.Popen(
        _command(args),
        cwd=REPO,
        env=tool_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True)


def final_params_equal(work_dir, reference_dir, iters, note=''):
    """Assert that ``iter_<iters>.pth`` holds the same parameters and buffers
    in both work dirs (``note`` opens each message); return the state dict of
    ``work_dir``'s."""
    import torch

    from mmdet_psbn.utils.io import load_checkpoint
    got, want = (
        load_checkpoint(osp.join(d, f'iter_{iters}.pth'))['state_dict']
        for d in (work_dir, reference_dir))
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=note + key)
    return got
