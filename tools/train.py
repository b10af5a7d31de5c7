# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Train a detector (or any mmengine model) with the psBN plugin.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--save-on-sigterm] [--cfg-options k=v ...]
        [--launcher pytorch]

Multi-GPU / multi-node: tools/dist_train.sh, tools/slurm_train.sh.
"""
import argparse

import torch
from mmengine.device import get_device

from mmdet_psbn.compat import use_cpu_amp
from mmdet_psbn.utils.checks import InputError, check_data_paths
from mmdet_psbn.utils.io import check_checkpoint
from mmdet_psbn.utils.tools import build_runner, load_config
from mmdet_psbn.utils.tools import parse_args as parse_common
from mmdet_psbn.utils.tools import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision: with CUDA, fp16 autocast and '
        'dynamic loss scaling (mmengine\'s AmpOptimWrapper); without it, '
        'bf16 autocast on the CPU, no loss scaling (docs/usage.md#mixed-'
        'precision-and-compilation)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by (GPUs x images per GPU) / '
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, with no value, from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--save-on-sigterm',
        action='store_true',
        help='on SIGTERM (slurm preemption, torchrun), save a checkpoint of '
        'the current iteration, point last_checkpoint at it and exit with '
        'status 143 (docs/cluster.md#preemption)')
    return parse_common(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)

    if args.amp:
        if torch.cuda.is_available():
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        elif get_device() == 'cpu':
            use_cpu_amp(cfg)  # bf16; mmdet_psbn.compat fix 4
        else:
            raise InputError(f'--amp supports CUDA (fp16) and the CPU '
                             f'(bf16), not {get_device()}; drop --amp on '
                             'this machine')

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr') or {}
        if 'enable' not in scale_cfg or 'base_batch_size' not in scale_cfg:
            raise InputError(
                '--auto-scale-lr needs auto_scale_lr = dict(enable=False, '
                'base_batch_size=N) in the config (mmdet\'s default_runtime '
                'has base_batch_size=16)')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        # mmengine then resumes from work_dir/last_checkpoint if it exists.
        cfg.resume = True
        cfg.load_from = None
        from mmengine.runner import find_latest_checkpoint

        # A kill mid-save cannot make it return a truncated checkpoint
        # (mmdet_psbn.compat, fix 3); '' means nothing complete was found.
        latest = find_latest_checkpoint(cfg.work_dir)
        if latest == '':
            raise InputError(
                f'{cfg.work_dir}/last_checkpoint is empty and the work dir '
                'holds no complete checkpoint: remove last_checkpoint to '
                'start afresh, or give one with --resume PATH')
        if latest is not None:
            check_checkpoint(latest)
    elif args.resume is not None:
        check_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume
    elif cfg.get('load_from'):
        check_checkpoint(cfg.load_from)

    check_data_paths(cfg)
    runner = build_runner(cfg)
    if args.save_on_sigterm:
        # Imported here: importing it registers the hook in the root HOOKS.
        from mmdet_psbn.engine.hooks.preemption_hook import \
            PreemptionCheckpointHook
        runner.register_hook(PreemptionCheckpointHook())
    runner.train()


if __name__ == '__main__':
    run_tool(main)
