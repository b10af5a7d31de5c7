# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""A diverged run (NaN / inf γ or β) is reported as diverged: neither
collapsed, dead nor healthy; by the statistics, the monitor hook and
tools/analyze_collapse.py."""
import copy
import glob
import json
import os.path as osp
import runpy

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.testing import RunnerTestCase

from mmdet_psbn.analysis.collapse import measure_model, measure_state_dict
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from ..conftest import TOOLS

NAN, INF = float('nan'), float('inf')


def two_layers(alpha=None):
    """Two norm layers of 4 channels, ``bn1`` and ``bn2``: channel 1 of ``bn1``
    collapsed, its channel 2 dead, the rest healthy."""
    bn = (lambda c: PostShiftedBatchNorm2d(c, alpha=alpha)) if alpha else \
        nn.BatchNorm2d
    model = nn.Sequential()
    model.add_module('bn1', bn(4))
    model.add_module('bn2', bn(4))
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([1.0, 1e-5, 1.0, 1.0]))
        model.bn1.bias.copy_(torch.tensor([0.0, 0.0, -10.0, 0.0]))
    return model


def test_finite_values_unchanged():
    s = measure_model(two_layers())
    summary = s.summary()
    assert summary['collapsed'] == pytest.approx(1 / 8)
    assert summary['dead'] == pytest.approx(1 / 8)
    assert summary['diverged'] == 0.0
    assert [r['diverged'] for r in s.per_layer()] == [0, 0]


@pytest.mark.parametrize('alpha', [None, 0.1])
def test_nan_and_inf_channels_are_diverged(alpha):
    model = two_layers(alpha)
    with torch.no_grad():
        model.bn2.weight[0] = NAN  # gamma NaN
        model.bn2.bias[1] = -INF  # finite gamma, beta -inf: not "dead"
        model.bn2.weight[2] = INF  # gamma inf: not "healthy"
        model.bn2.bias[3] = NAN
    s = measure_model(model)
    summary = s.summary()
    assert summary['diverged'] == pytest.approx(4 / 8)
    # The shares count the 4 finite channels only: bn1's collapsed and
    # dead channel each, none of bn2's.
    assert summary['collapsed'] == pytest.approx(1 / 4)
    assert summary['dead'] == pytest.approx(1 / 4)
    assert summary['rectified_channels'] == 4
    assert [r['diverged'] for r in s.per_layer()] == [0, 4]
    assert [r['collapsed'] for r in s.per_layer()] == [1, 0]
    assert [r['dead'] for r in s.per_layer()] == [1, 0]
    # A later measurement of the same run: no transition from NaN.
    assert s.transitions(measure_model(two_layers(alpha))) == dict(
        entered_dead=0, recovered=0)


def test_state_dict_all_nan_layer():
    sd = two_layers().state_dict()
    sd['bn1.weight'] = torch.full((4, ), NAN)
    s = measure_state_dict(sd)
    assert s.summary()['diverged'] == pytest.approx(0.5)
    assert s.summary()['collapsed'] == 0.0
    rows = s.per_layer()
    assert rows[0]['diverged'] == 4
    assert rows[0]['min_abs_gamma'] != rows[0]['min_abs_gamma']  # NaN


def test_analyze_collapse_reports_diverged(tmp_path, capsys):
    ckpt = tmp_path / 'diverged.pth'
    sd = two_layers().state_dict()
    sd['bn2.weight'] = torch.tensor([NAN, 1.0, INF, 1.0])
    torch.save(dict(state_dict=sd), ckpt)
    tool = runpy.run_path(
        osp.join(TOOLS, 'analyze_collapse.py'), run_name='analyze')
    out_dir = tmp_path / 'report'
    tool['run_tool'](
        tool['main'],
        [str(ckpt), '--out-dir', str(out_dir)],
        prog='analyze_collapse.py')
    out = capsys.readouterr().out
    assert 'DIVERGED: 25.00 % of all channels have NaN or inf' in out
    report = json.load(open(out_dir / 'collapse_analysis.json'))
    summary = report['checkpoints'][0]['summary']
    assert summary['diverged'] == 0.25
    assert summary['collapsed'] == pytest.approx(1 / 6)
    assert (out_dir / 'gamma_hist.png').exists()  # NaN is not plotted


class NaNToyModel(BaseModel):
    """Conv -> psBN -> ReLU on RunnerTestCase's toy inputs; two of the psBN
    channels start with γ = NaN (a run that has diverged)."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.conv = nn.Conv2d(2, 4, 1)
        self.bn = PostShiftedBatchNorm2d(4)
        with torch.no_grad():
            self.bn.weight[:2] = NAN

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if isinstance(inputs, list):
            inputs = torch.stack(inputs)
        out = torch.relu(self.bn(self.conv(inputs.view(-1, 2, 1, 1))))
        if mode == 'loss':
            return dict(loss=out.mean())
        return out


class TestMonitorOnDivergedRun(RunnerTestCase):

    def setUp(self):
        super().setUp()
        MODELS.register_module(module=NaNToyModel, force=True)

    def tearDown(self):
        MODELS.module_dict.pop('NaNToyModel')
        super().tearDown()

    def test_reported_as_diverged(self):
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.model = dict(type='NaNToyModel')
        cfg.optim_wrapper.optimizer.lr = 0.0  # keep the two NaN channels
        cfg.custom_hooks = [
            dict(type='CollapseMonitorHook', interval=1, flops=False)
        ]
        cfg.train_cfg.max_epochs = 1
        runner = self.build_runner(cfg)
        runner.train()
        hub = runner.message_hub
        self.assertEqual(
            hub.get_scalar('train/collapse/diverged').current(), 0.5)
        self.assertEqual(
            hub.get_scalar('train/collapse/collapsed').current(), 0.0)
        log = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
        self.assertEqual(
            log.count('CollapseMonitorHook: the run diverged'),
            1)  # warned once
        self.assertIn('DIVERGED 50.00 %', log)  # the final summary line
        report = json.load(
            open(osp.join(runner.work_dir, 'collapse', 'report.json')))
        self.assertEqual(report['summary']['diverged'], 0.5)
        self.assertIn('diverged', report['definitions'])
        self.assertTrue(all(r['diverged'] == 0.5 for r in report['history']))
