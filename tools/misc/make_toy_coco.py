# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Write the toy COCO-format detection set (see mmdet_psbn.datasets.toy_coco).

python tools/misc/make_toy_coco.py data/toy_coco
"""
import argparse
import os.path as osp

from mmdet_psbn.datasets.toy_coco import make_toy_coco
from mmdet_psbn.utils.tools import add_debug_arg, run_tool, user_errors


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='data root to create')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--max-objects', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--force',
        action='store_true',
        help='rebuild even if the same set exists')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with user_errors(ValueError, FileExistsError):
        info = make_toy_coco(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            max_objects=args.max_objects,
            seed=args.seed,
            force=args.force)
    print(f'toy COCO set at {osp.abspath(args.root)}: '
          f'{info["num_train"]} train / {info["num_val"]} val images of '
          f'{info["image_size"]}px')


if __name__ == '__main__':
    run_tool(main)
