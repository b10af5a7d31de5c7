# Copyright (c) mmdet-psbn contributors. All rights reserved.
import copy
import glob
import json
import os.path as osp

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.testing import RunnerTestCase

from mmdet_psbn.engine.hooks import CollapseMonitorHook
from mmdet_psbn.engine.hooks.collapse_monitor_hook import decay_kind
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d


class ConvToyModel(BaseModel):
    """Conv -> psBN -> ReLU -> conv -> psBN (zero-init, like a residual block's
    last BN) on RunnerTestCase's 2-d toy inputs seen as 2x1x1."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.conv1 = nn.Conv2d(2, 8, 1)
        self.bn1 = PostShiftedBatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 1)
        self.bn2 = PostShiftedBatchNorm2d(4)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if isinstance(inputs, list):
            inputs = torch.stack(inputs)
        x = inputs.view(inputs.shape[0], 2, 1, 1)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if mode == 'loss':
            return dict(loss=(out.mean() - 1)**2)
        return out


class TestCollapseMonitorHook(RunnerTestCase):

    def setUp(self):
        super().setUp()
        MODELS.register_module(module=ConvToyModel, force=True)

    def tearDown(self):
        MODELS.module_dict.pop('ConvToyModel')
        super().tearDown()

    def build_cfg(self, **hook_args):
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.model = dict(type='ConvToyModel')
        cfg.optim_wrapper.optimizer.weight_decay = 1e-4
        cfg.custom_hooks = [
            dict(type='CollapseMonitorHook', interval=2, **hook_args)
        ]
        cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        cfg.train_cfg.max_epochs = 2
        return cfg

    def log_text(self, runner):
        return open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()

    def test_logs_scalars_and_writes_report(self):
        runner = self.build_runner(self.build_cfg())
        runner.train()
        hub = runner.message_hub
        for key in ('collapsed', 'dead', 'sparsity', 'zero_init',
                    'entered_dead', 'recovered', 'stem/dead'):
            self.assertIn(f'train/collapse/{key}', hub.log_scalars, key)
        # The zero-init bn2 is not a false alarm.
        self.assertEqual(
            hub.get_scalar('train/collapse/collapsed').current(), 0)
        self.assertGreater(
            hub.get_scalar('train/collapse/zero_init').current(), 0)
        # Every backend gets them: here the JSON scalar log.
        scalars = [
            json.loads(line) for line in open(
                osp.join(runner.log_dir, 'vis_data', 'scalars.json'))
        ]
        self.assertTrue(any('collapse/dead' in r for r in scalars))
        out = osp.join(runner.work_dir, 'collapse')
        report = json.load(open(osp.join(out, 'report.json')))
        self.assertEqual([r['name'] for r in report['layers']], ['bn1', 'bn2'])
        self.assertTrue(report['layers'][1]['zero_init'])
        self.assertEqual(report['flops_links']['bn1'],
                         dict(producers=['conv1'], consumers=['conv2']))
        # start, every 2 iterations and each epoch end (no duplicates)
        iters = [r['iter'] for r in report['history']]
        self.assertEqual(iters[0], 0)
        self.assertEqual(iters, sorted(set(iters)))
        self.assertIn(runner.iter, iters)
        for name in ('gamma_hist.png', 'gamma_beta.png', 'history.png'):
            self.assertTrue(osp.isfile(osp.join(out, name)), name)

    def test_warns_when_psbn_gets_no_weight_decay(self):
        cfg = self.build_cfg()
        cfg.optim_wrapper.paramwise_cfg = dict(norm_decay_mult=0.)
        runner = self.build_runner(cfg)
        runner.train()
        self.assertIn('2 psBN layers get no weight decay',
                      self.log_text(runner))

    def test_no_warning_with_weight_decay(self):
        runner = self.build_runner(self.build_cfg())
        runner.train()
        self.assertNotIn('get no weight decay', self.log_text(runner))

    def test_says_per_optimizer_whether_psbn_recovers(self):
        # docs/optimizers.md: SGD and AdamW scale gamma and beta together
        # (psBN's mechanism), Adam's L2 decay does not (warning)
        cases = (('SGD', 'INFO', 'psBN under SGD: weight decay scales a '
                  "dead channel's gamma and beta together"),
                 ('AdamW', 'INFO', 'psBN under AdamW: decoupled weight decay'
                  " scales a dead channel's gamma and beta together"),
                 ('Adam', 'WARNING', 'psBN under Adam with L2 weight_decay: '
                  "the decay's gradient is normalised per coordinate"))
        for opt, level, text in cases:
            with self.subTest(optimizer=opt):
                cfg = self.build_cfg()
                cfg.optim_wrapper.optimizer = dict(
                    type=opt, lr=1e-3, weight_decay=1e-4)
                # log_dir is a timestamp: runs in the same second share one
                cfg.work_dir = osp.join(cfg.work_dir, opt)
                runner = self.build_runner(cfg)
                runner.train()
                lines = [
                    line for line in self.log_text(runner).splitlines()
                    if 'psBN under' in line
                ]
                self.assertEqual(len(lines), 1, lines)
                self.assertIn(text, lines[0])
                self.assertIn(f' - {level} - ', lines[0])
                self.assertIn('docs/optimizers.md', lines[0])

    def test_no_optimizer_note_without_decay(self):
        cfg = self.build_cfg()
        cfg.optim_wrapper.optimizer = dict(type='Adam', lr=1e-3)
        runner = self.build_runner(cfg)
        runner.train()
        text = self.log_text(runner)
        self.assertNotIn('psBN under', text)
        self.assertIn('2 psBN layers get no weight decay', text)

    def test_decay_kind_of_adam_with_decoupled_decay(self):
        w = [nn.Parameter(torch.zeros(1))]
        for opt, kind in ((torch.optim.Adam(w, weight_decay=0.1),
                           'adaptive_l2'), (torch.optim.Adam(
                               w,
                               weight_decay=0.1,
                               decoupled_weight_decay=True), 'decoupled'),
                          (torch.optim.SGD(w, lr=0.1),
                           'none'), (torch.optim.LBFGS(w), 'none')):
            self.assertEqual(
                decay_kind(opt, opt.param_groups[0]), kind, type(opt))

    def test_warns_on_a_jump_of_the_dead_share(self):
        runner = self.build_runner(self.build_cfg(jump_thr=0.1))
        runner.train()
        hook = next(
            h for h in runner.hooks if isinstance(h, CollapseMonitorHook))
        with torch.no_grad():
            runner.model.bn1.bias[:4] = -100.0  # kill half of bn1
        hook._measure(runner, runner.iter + 1)
        self.assertIn('the dead share jumped', self.log_text(runner))
        self.assertEqual(hook._history[-1]['entered_dead'], 4)
        self.assertEqual(
            runner.message_hub.get_scalar(
                'train/collapse/entered_dead').current(), 4)

    def test_zero_init_layers_names_moved_zero_init_layers(self):
        # A finetune from a checkpoint whose zero-init bn2 has moved off 0
        # (tiny, not exactly 0): without the option it is collapsed ...
        cfg = self.build_cfg()
        runner = self.build_runner(cfg)
        with torch.no_grad():
            runner.model.bn2.weight.fill_(1e-5)
        runner.train()
        report = json.load(
            open(osp.join(runner.work_dir, 'collapse', 'report.json')))
        self.assertEqual(report['history'][0]['collapsed'], 4 / 12)
        # ... with it, reported apart as zero-init
        cfg = self.build_cfg(zero_init_layers=r'bn2$')
        cfg.experiment_name = 'named'
        runner = self.build_runner(cfg)
        with torch.no_grad():
            runner.model.bn2.weight.fill_(1e-5)
        runner.train()
        hook = next(
            h for h in runner.hooks if isinstance(h, CollapseMonitorHook))
        self.assertEqual(hook._history[0]['collapsed'], 0)
        self.assertEqual(hook._history[0]['zero_init'], 4 / 12)
        with self.assertRaisesRegex(ValueError,
                                    'zero_init_layers must be a regular'):
            CollapseMonitorHook(zero_init_layers='bn[')

    def test_state_survives_resume(self):
        cfg = self.build_cfg()
        runner = self.build_runner(cfg)
        runner.train()
        full = next(
            h for h in runner.hooks
            if isinstance(h, CollapseMonitorHook))._history
        ckpt = osp.join(runner.work_dir, 'epoch_1.pth')
        state = torch.load(ckpt)['collapse_monitor']  # safe loading
        self.assertEqual(state['last']['names'], ['bn1', 'bn2'])

        cfg = self.build_cfg()
        cfg.experiment_name = 'resumed'
        cfg.resume, cfg.load_from = True, ckpt
        resumed = self.build_runner(cfg)
        resumed.train()
        hist = next(
            h for h in resumed.hooks
            if isinstance(h, CollapseMonitorHook))._history
        # the history up to epoch 1 came from the checkpoint and goes on
        self.assertEqual([r['iter'] for r in hist], [r['iter'] for r in full])
        # zero-init flags too: bn2 is still reported apart after resume
        self.assertEqual(hist[-1]['collapsed'], 0)

    def test_fresh_start_from_load_from_measures_the_loaded_weights(self):
        runner = self.build_runner(self.build_cfg())
        runner.train()
        cfg = self.build_cfg()
        cfg.experiment_name = 'finetune'
        cfg.load_from = osp.join(runner.work_dir, 'epoch_2.pth')
        ft = self.build_runner(cfg)
        ft.train()
        hist = next(h for h in ft.hooks
                    if isinstance(h, CollapseMonitorHook))._history
        self.assertEqual(hist[0]['iter'], 0)  # not the old run's history

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, 'interval .* got 0'):
            CollapseMonitorHook(interval=0)
        with self.assertRaisesRegex(ValueError, 'jump_thr .* got 2'):
            CollapseMonitorHook(jump_thr=2)
        with self.assertRaisesRegex(ValueError, 'prob_thr'):
            CollapseMonitorHook(prob_thr=0)

    def test_rectified_dead_and_inactive_in_every_row(self):
        runner = self.build_runner(self.build_cfg())
        with torch.no_grad():  # 4 of bn1's 8 channels never fire
            runner.model.bn1.bias[:4] = -100.0
        runner.train()
        report = json.load(
            open(osp.join(runner.work_dir, 'collapse', 'report.json')))
        for row in report['history']:
            # bn1 only: bn2 is the model's output, no ReLU reads it
            self.assertEqual(row['rectified_channels'], 8, row)
            self.assertEqual(row['dead_rule'], 'rectified', row)
            self.assertIn('inactive', row)
        start = report['history'][0]
        self.assertEqual(start['iter'], 0)
        self.assertEqual(start['dead'], 4 / 8)
        # taken from the first iteration's real training forward
        self.assertEqual(start['inactive'], 4 / 8)
        self.assertIn('train/collapse/inactive',
                      runner.message_hub.log_scalars)
        layers = {r['name']: r for r in report['layers']}
        self.assertTrue(layers['bn1']['rectified'])
        self.assertFalse(layers['bn2']['rectified'])

    def test_the_monitor_changes_nothing_in_training(self):
        """Graph pass and activation probes leave losses and parameters bit-
        identical to a run without the hook."""

        def run(name, hooks):
            cfg = self.build_cfg()
            cfg.custom_hooks = hooks
            cfg.experiment_name = name
            cfg.work_dir = osp.join(cfg.work_dir, name)
            cfg.randomness = dict(seed=0)
            runner = self.build_runner(cfg)
            runner.train()
            losses = [
                r['loss'] for r in map(
                    json.loads,
                    open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')))
                if 'loss' in r
            ]
            return losses, runner.model.state_dict()

        plain = run('plain', [])
        watched = run(
            'watched',
            [dict(type='CollapseMonitorHook', interval=1, activation=True)])
        self.assertTrue(plain[0])
        self.assertEqual(plain[0], watched[0])
        for key, value in plain[1].items():
            self.assertTrue(torch.equal(value, watched[1][key]), key)


def test_decay_checks_cover_every_post_shifted_variant():
    """PsGN and psBN1d heads get the weight-decay checks too, not only psBN."""
    from mmdet_psbn.engine.hooks.collapse_monitor_hook import (
        psbn_decay_notes, psbn_decay_problems)
    from mmdet_psbn.models.layers import (PostShiftedBatchNorm1d,
                                          PostShiftedGroupNorm)
    model = nn.ModuleDict(
        dict(
            gn=PostShiftedGroupNorm(8, num_groups=2),
            bn1d=PostShiftedBatchNorm1d(4),
            plain=nn.GroupNorm(2, 8)))
    no_decay = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0)
    assert psbn_decay_problems(model, no_decay)['no_decay'] == ['gn', 'bn1d']
    adamw = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    assert psbn_decay_problems(model, adamw)['no_decay'] == []
    assert [kind
            for kind, _ in psbn_decay_notes(model, adamw)] == ['decoupled']
