# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The collapse scalars reach real visualizer backends, read back with each
backend's own reader (tensorboard and mlflow-skinny are test dependencies).

Each test trains one Runner with LocalVisBackend beside the backend under
test and checks that the backend holds every ``collapse/...`` scalar of
``scalars.json`` at the same steps with the same values.
"""
import copy
import glob
import json
import os
import os.path as osp
from unittest import mock

from mlflow.tracking import MlflowClient
from mmengine.registry import MODELS
from mmengine.testing import RunnerTestCase
from tensorboard.backend.event_processing.event_accumulator import \
    EventAccumulator

from .test_collapse_monitor_hook import ConvToyModel


class TestVisBackends(RunnerTestCase):

    def setUp(self):
        super().setUp()
        MODELS.register_module(module=ConvToyModel, force=True)

    def tearDown(self):
        MODELS.module_dict.pop('ConvToyModel')
        super().tearDown()

    def train(self, backend):
        """Train one epoch (4 iterations), measuring every iteration, with
        LocalVisBackend and ``backend``; return the runner and the
        ``collapse/`` scalars of scalars.json as {tag: {step: value}}."""
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.model = dict(type='ConvToyModel')
        cfg.optim_wrapper.optimizer.weight_decay = 1e-4
        cfg.custom_hooks = [dict(type='CollapseMonitorHook', interval=1)]
        cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
        cfg.visualizer = dict(
            type='Visualizer',
            vis_backends=[dict(type='LocalVisBackend'), backend])
        cfg.train_cfg.max_epochs = 1
        runner = self.build_runner(cfg)
        runner.train()  # LoggerHook.after_run closes the backends
        local = {}
        for line in open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')):
            record = json.loads(line)
            for tag, value in record.items():
                if tag.startswith('collapse/'):
                    local.setdefault(tag, {})[record['step']] = value
        for tag in ('collapse/collapsed', 'collapse/dead',
                    'collapse/zero_init', 'collapse/stem/dead'):
            self.assertEqual(len(local.get(tag, ())), 4, tag)
        return runner, local

    def assert_same(self, got, local, places):
        self.assertEqual(sorted(got), sorted(local))
        for tag, steps in local.items():
            self.assertEqual(sorted(got[tag]), sorted(steps), tag)
            for step, value in steps.items():
                self.assertAlmostEqual(
                    got[tag][step], value, places=places, msg=(tag, step))

    def test_collapse_scalars_reach_tensorboard(self):
        runner, local = self.train(dict(type='TensorboardVisBackend'))
        events = glob.glob(
            osp.join(runner.log_dir, 'vis_data', 'events.out.tfevents.*'))
        self.assertEqual(len(events), 1, events)
        accumulator = EventAccumulator(events[0])
        accumulator.Reload()
        board = {
            tag: {
                e.step: e.value
                for e in accumulator.Scalars(tag)
            }
            for tag in accumulator.Tags()['scalars']
            if tag.startswith('collapse/')
        }
        self.assertAlmostEqual(board['collapse/zero_init'][1], 1 / 3, places=6)
        self.assert_same(board, local, places=6)  # TensorBoard keeps float32

    def test_collapse_scalars_reach_an_mlflow_file_store(self):
        uri = 'file://' + osp.join(self.temp_dir.name, 'mlruns')
        # MLflow 3 refuses its file store unless told; sqlite would need
        # sqlalchemy and alembic, which mlflow-skinny does not bring.
        with mock.patch.dict(os.environ, MLFLOW_ALLOW_FILE_STORE='true'):
            _, local = self.train(
                dict(
                    type='MLflowVisBackend',
                    exp_name='collapse',
                    tracking_uri=uri))
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name('collapse')
            runs = client.search_runs([experiment.experiment_id])
            self.assertEqual(len(runs), 1)
            run_id = runs[0].info.run_id
            tags = [
                tag for tag in runs[0].data.metrics
                if tag.startswith('collapse/')
            ]
            stored = {
                tag: {
                    m.step: m.value
                    for m in client.get_metric_history(run_id, tag)
                }
                for tag in tags
            }
        self.assert_same(stored, local, places=12)
