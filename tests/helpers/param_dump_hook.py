# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Test helper: every rank saves its model parameters at the end of a run.

Used by the multi-process test to check that all ranks end identical;
never part of the package.
"""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ParamDumpHook(Hook):

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        torch.save({
            k: v.detach().cpu()
            for k, v in model.named_parameters()
        }, osp.join(self.out_dir, f'params_rank{get_rank()}.pt'))
