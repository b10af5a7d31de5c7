# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Test helper: record the dtypes the ps layers compute in while training.

Used by the ``tools/train.py --amp`` test: during every training iteration a
forward hook on each ps layer notes its input and output dtypes and whether
CPU autocast is on; ``after_train`` writes them to ``<out_dir>/dtypes.json``.
Never part of the package.
"""
import json
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmdet_psbn.models.layers.psbn import is_post_shifted


@HOOKS.register_module()
class NormDtypeHook(Hook):
    """Its hooks are removed before CollapseMonitorHook's graph pass (an eval
    forward outside autocast) runs."""

    priority = 'HIGH'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.calls = []
        self._handles = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        for name, module in model.named_modules():
            if is_post_shifted(module):
                self._handles.append(
                    module.register_forward_hook(self._record(name)))

    def _record(self, name):

        def hook(module, args, output):
            self.calls.append(
                dict(
                    name=name,
                    input=str(args[0].dtype),
                    output=str(output.dtype),
                    autocast=torch.is_autocast_enabled('cpu')))

        return hook

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def after_train(self, runner):
        with open(osp.join(self.out_dir, 'dtypes.json'), 'w') as f:
            json.dump(self.calls, f)
