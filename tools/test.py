# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Evaluate a checkpoint on the config's test set.

python tools/test.py CONFIG CHECKPOINT [--out results.pkl]
    [--work-dir DIR] [--cfg-options k=v ...] [--launcher pytorch]
"""
import argparse

from mmdet_psbn.utils.checks import InputError, check_data_paths
from mmdet_psbn.utils.io import check_checkpoint
from mmdet_psbn.utils.tools import build_runner, load_config
from mmdet_psbn.utils.tools import parse_args as parse_common
from mmdet_psbn.utils.tools import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        type=str,
        help='dump the predictions to a pickle file (.pkl) for offline '
        'evaluation')
    return parse_common(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise InputError(f'--out must be a .pkl or .pickle file, got '
                         f'{args.out!r}')
    cfg = load_config(args)
    check_checkpoint(args.checkpoint)
    check_data_paths(
        cfg,
        dataloaders=('test_dataloader', ),
        evaluators=('test_evaluator', ))
    cfg.load_from = args.checkpoint

    runner = build_runner(cfg, match_shapes=True)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    run_tool(main)
