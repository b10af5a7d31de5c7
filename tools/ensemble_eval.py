# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Evaluate a snapshot ensemble: the averaged softmax of checkpoints.

    python tools/ensemble_eval.py CONFIG SNAPSHOT [SNAPSHOT ...]
    python tools/ensemble_eval.py CONFIG --work-dir DIR [--last 3]

With --work-dir, the last --last snapshots that RestartSnapshotHook wrote
(DIR/snapshots/round_<k>.pth) are used. Prints each snapshot's top-1 and the
ensemble's, on the config's test_dataloader.
"""
import argparse
import glob
import os.path as osp
import re

from mmdet_psbn.utils.checks import InputError
from mmdet_psbn.utils.io import check_checkpoint, dump_json
from mmdet_psbn.utils.tools import build_runner, load_config
from mmdet_psbn.utils.tools import parse_args as parse_common
from mmdet_psbn.utils.tools import run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Evaluate a snapshot ensemble (averaged softmax)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('snapshots', nargs='*', help='checkpoint files')
    parser.add_argument(
        '--last',
        type=int,
        default=3,
        help='with --work-dir: how many of the last '
        'snapshots to ensemble (default 3)')
    parser.add_argument('--out', help='write the results to this JSON file')
    return parse_common(parser, argv)


def find_snapshots(work_dir: str, last: int):
    found = glob.glob(osp.join(work_dir, 'snapshots', 'round_*.pth'))
    rounds = sorted(
        (int(re.search(r'round_(\d+)\.pth$', p).group(1)), p) for p in found)
    if not rounds:
        raise InputError(f'no snapshots (snapshots/round_<k>.pth) in '
                         f'{work_dir!r}; train with RestartSnapshotHook or '
                         'name the checkpoints')
    return [p for _, p in rounds[-last:]]


def main(argv=None):
    args = parse_args(argv)
    if args.last < 1:
        raise InputError(f'--last must be >= 1, got {args.last}')
    snapshots = list(args.snapshots)
    if not snapshots:
        if args.work_dir is None:
            raise InputError('give snapshot files or --work-dir')
        snapshots = find_snapshots(args.work_dir, args.last)
    for path in snapshots:
        check_checkpoint(path)
    cfg = load_config(args)
    cfg.custom_hooks = []
    cfg.load_from = None
    runner = build_runner(cfg)

    from psbn_cifar.evaluation.ensemble import (ensemble_accuracy,
                                                load_snapshot_scores)
    scores, labels = load_snapshot_scores(runner.model, snapshots,
                                          runner.test_dataloader)
    if scores[0] is None:  # not rank 0
        return
    singles = [float(100.0 * (s.argmax(1) == labels).mean()) for s in scores]
    acc = ensemble_accuracy(scores, labels)
    for path, a in zip(snapshots, singles):
        print(f'{path}: top1 {a:.2f} %')
    print(f'ensemble of {len(snapshots)} (averaged softmax): top1 '
          f'{acc:.2f} %')
    if args.out:
        dump_json(
            dict(snapshots=snapshots, single=singles, ensemble=acc), args.out)


if __name__ == '__main__':
    run_tool(main)
