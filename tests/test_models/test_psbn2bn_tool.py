# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""tools/psbn2bn.py: formats, what it keeps, its errors, atomic writes.

(The end-to-end check with vanilla mmdet is in ``test_psbn_mmdet.py``.)
"""
import argparse
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from .psbn_helpers import TinyNet, randomize_bn, tiny_input

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PSBN2BN = osp.join(REPO, 'tools', 'psbn2bn.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('psbn2bn_tool', PSBN2BN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ps_model():
    return randomize_bn(
        TinyNet(lambda c: PostShiftedBatchNorm2d(c, alpha=0.05)), seed=21)


def _eval_out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _run(tool, *args, capsys):
    """Run the tool as its command line does: (exit status, out, err)."""
    try:
        tool.run_tool(tool.main, [str(a) for a in args], prog='psbn2bn.py')
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _files(directory):
    return sorted(os.listdir(directory))


def test_mmengine_checkpoint(tool, tmp_path, capsys):
    model = _ps_model()
    hub = MessageHub.get_instance('psbn2bn_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 30)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(tiny_input()).sum().backward()
    optimizer.step()
    src = tmp_path / 'epoch_3.pth'
    torch.save(
        dict(
            meta=dict(epoch=3, iter=30, seed=np.int64(0)),
            state_dict=model.state_dict(),
            optimizer=optimizer.state_dict(),
            message_hub=hub.state_dict(),
            param_schedulers=[]), src)
    dst = tmp_path / 'out' / 'bn.pth'
    code, out, err = _run(tool, src, dst, capsys=capsys)
    assert code == 0, err
    assert out.strip() == f'folded 7 psBN layers (alpha=0.05) into {dst}'
    assert _files(dst.parent) == ['bn.pth']  # no temporary file left

    ckpt = torch.load(dst, weights_only=True)
    assert sorted(ckpt) == ['meta', 'state_dict']
    assert ckpt['meta']['epoch'] == 3
    assert ckpt['meta']['psbn2bn'] == dict(num_layers=7, alpha=[0.05])
    bn_model = TinyNet()
    res = bn_model.load_state_dict(ckpt['state_dict'])
    assert not res.missing_keys and not res.unexpected_keys
    x = tiny_input()
    assert torch.equal(_eval_out(bn_model, x), _eval_out(model, x))


def test_bare_state_dict_stays_bare(tool, tmp_path, capsys):
    model = _ps_model()
    src, dst = tmp_path / 'ps.pth', tmp_path / 'bn.pth'
    torch.save(model.state_dict(), src)
    code, _, err = _run(tool, src, dst, capsys=capsys)
    assert code == 0, err
    folded = torch.load(dst, weights_only=True)
    assert 'state_dict' not in folded and 'bn1.bias' in folded
    bn_model = TinyNet()
    assert not bn_model.load_state_dict(folded).unexpected_keys
    x = tiny_input()
    assert torch.equal(_eval_out(bn_model, x), _eval_out(model, x))


def _bad_inputs(tmp_path):
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'\x80\x04 not a checkpoint at all')
    plain = tmp_path / 'plain_bn.pth'
    torch.save(dict(meta={}, state_dict=TinyNet().state_dict()), plain)
    no_bias = tmp_path / 'no_bias.pth'
    torch.save(
        nn.Sequential(
            nn.Conv2d(3, 3, 1),
            PostShiftedBatchNorm2d(3, affine=False)).state_dict(), no_bias)
    unsafe = tmp_path / 'unsafe.pth'
    torch.save(dict(state_dict={}, args=argparse.Namespace(a=1)), unsafe)
    listed = tmp_path / 'list.pth'
    torch.save([1, 2], listed)
    return [
        (tmp_path / 'missing.pth', 'does not exist'),
        (corrupt, 'cannot be read safely.*corrupt'),
        (plain, 'no psBN layer'),
        (no_bias, "'1' has no bias"),
        (unsafe, 'Unsupported global.*argparse.Namespace.*if you trust'),
        (listed, 'expected a checkpoint dict, got list'),
    ]


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
def test_errors_are_clear_and_write_nothing(tool, tmp_path, capsys):
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    for src, message in _bad_inputs(tmp_path):
        code, out, err = _run(tool, src, out_dir / 'bn.pth', capsys=capsys)
        assert code == 2, src
        assert err.startswith('psbn2bn.py: error: '), err
        assert str(src) in err, err
        assert re.search(message, err), err
        assert _files(out_dir) == []


def test_command_line(tmp_path):
    res = subprocess.run([sys.executable, PSBN2BN, '--help'],
                         capture_output=True,
                         text=True,
                         timeout=300)
    assert res.returncode == 0
    assert "keeps only 'meta'" in res.stdout and 'resume' in res.stdout
    res = subprocess.run(
        [sys.executable, PSBN2BN, tmp_path / 'nope.pth', tmp_path / 'o.pth'],
        capture_output=True,
        text=True,
        timeout=300)
    assert res.returncode == 2
    assert res.stderr == (f'psbn2bn.py: error: checkpoint '
                          f"'{tmp_path / 'nope.pth'}' does not exist: give "
                          'the path of a checkpoint file (.pth)\n')
    assert not (tmp_path / 'o.pth').exists()
