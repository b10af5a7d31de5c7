# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""tools/analyze_collapse.py on checkpoints made here."""
import json
from collections import OrderedDict

import pytest
import torch

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from ..conftest import run_tool
from ..test_analysis.test_collapse import Block, set_affine


def block_state(norm, beta1):
    m = Block(norm)
    set_affine(m.bn1, [1.0, 1e-4, 1.0, 1.0], beta1)
    return m.state_dict()


def test_side_by_side_series_json_and_plots(tmp_path):
    bn = tmp_path / 'bn.pth'
    ps = tmp_path / 'ps.pth'
    # an mmengine-style checkpoint and a bare (torchvision-style) state dict
    torch.save(
        dict(
            meta=dict(iter=10),
            state_dict=block_state(torch.nn.BatchNorm2d,
                                   [0.0, 0.0, -5.0, -5.0])), bn)
    torch.save(block_state(PostShiftedBatchNorm2d, [0.0, 0.0, 0.0, -5.0]), ps)
    out = tmp_path / 'out'
    proc = run_tool([
        'tools/analyze_collapse.py', bn, ps, '--labels', 'BN', 'psBN',
        '--out-dir', out
    ])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'bn1' in proc.stdout and 'BN/psBN' in proc.stdout
    assert 'BN: collapsed 12.50 %, dead 25.00 %' in proc.stdout
    assert 'psBN: collapsed 12.50 %, dead 12.50 %' in proc.stdout
    # no --config: the rule used for the dead share is stated
    assert 'dead: every BN layer counted (no --config' in proc.stdout
    report = json.load(open(out / 'collapse_analysis.json'))
    first, second = report['checkpoints']
    assert first['iter'] == 10 and second['iter'] is None
    assert second['transitions'] == dict(entered_dead=0, recovered=1)
    for name in ('gamma_hist.png', 'gamma_beta_BN.png', 'gamma_beta_psBN.png',
                 'history.png'):
        assert (out / name).stat().st_size > 1000, name


def test_flops_sparsity_with_config(tmp_path):
    from ..conftest import REPO
    ckpt = tmp_path / 'r18.pth'
    cfg = tmp_path / 'r18.py'
    cfg.write_text("default_scope = 'mmdet'\n"
                   "model = dict(type='ResNet', depth=18, "
                   "norm_cfg=dict(type='BN'))\n")
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmdet')
    model = MODELS.build(dict(type='ResNet', depth=18))
    with torch.no_grad():
        model.layer1[0].bn1.weight[:32] = 0.0  # half of one layer collapses
    torch.save(model.state_dict(), ckpt)
    proc = run_tool([
        'tools/analyze_collapse.py', ckpt, '--config', cfg, '--input-size',
        '64', '64', '--out-dir', tmp_path / 'out'
    ],
                    cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:]
    s = json.load(open(tmp_path / 'out' /
                       'collapse_analysis.json'))['checkpoints'][0]['summary']
    # 32 channels of layer1.0.bn1 (16x16 maps at 64x64 input): producer
    # conv1 3x3x64 -> 64*9*256 each, consumer conv2 3x3 -> 64*9*256 each.
    removed = 32 * 2 * 64 * 9 * 256
    total = 1.82e9 * (64 / 224)**2  # ResNet-18: 1.82 GMACs at 224
    assert s['sparsity'] == pytest.approx(removed / total, rel=0.03)
    # With the graph, the dead share covers the rectified channels: the
    # stem's bn1 and each BasicBlock's bn1 (64 + 2*(64+128+256+512)), not
    # bn2 or the downsample BNs, which feed an addition (4,800 in all).
    assert s['channels'] == 4800 and s['rectified_channels'] == 1984
    assert s['dead_rule'] == 'rectified'
    assert 'dead: rectified channels only' in proc.stdout


def test_refuses_unsafe_and_corrupt_files(tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': OrderedDict(), 'x': torch.nn.Linear(1, 1)}, evil)
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    for path in (evil, bad):
        proc = run_tool(
            ['tools/analyze_collapse.py', path, '--out-dir', tmp_path / 'o'])
        assert proc.returncode == 2, proc.stdout[-2000:]
        assert 'cannot be read safely' in proc.stdout
        assert 'Traceback' not in proc.stdout
    assert not (tmp_path / 'o').exists()
    proc = run_tool(['tools/analyze_collapse.py', tmp_path / 'none.pth'])
    assert proc.returncode == 2 and 'does not exist' in proc.stdout
