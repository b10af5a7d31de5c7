# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Write a small CIFAR-10-format data root (see psbn_cifar.datasets.cifar).

    python tools/misc/make_toy_cifar.py data/cifar10

It creates ROOT/cifar-10-batches-py/ (data_batch_1..5, test_batch,
batches.meta) in the official pickled format, deterministically; the CIFAR
configs read it as they would the real set. Real data already there is
never overwritten.
"""
import argparse
import os.path as osp

from mmdet_psbn.utils.tools import add_debug_arg, run_tool, user_errors
from psbn_cifar.datasets.cifar import make_toy_cifar


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'root',
        help='data root to create (the folder that '
        'will contain cifar-10-batches-py)')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-test', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--force',
        action='store_true',
        help='rebuild even if the same toy set exists')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with user_errors(ValueError, FileExistsError):
        root = make_toy_cifar(
            args.root,
            num_train=args.num_train,
            num_test=args.num_test,
            seed=args.seed,
            force=args.force)
    print(f'toy CIFAR-10 set at {osp.abspath(root)}/cifar-10-batches-py: '
          f'{args.num_train} train / {args.num_test} test images of 32px')


if __name__ == '__main__':
    run_tool(main)
