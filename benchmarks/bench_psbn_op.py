# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Op-level cost of psBN against BN (and a naive ``bn(x) + alpha``).

    python benchmarks/bench_psbn_op.py [--shape N C H W] [--repeat R]
        [--device cpu|cuda]

Prints the median time of forward+backward in train mode and of forward in
eval mode, and the ratios to BN measured in this one run. Ratios, not
absolute times, are what carries over between machines. Timed with
``_timing.interleaved`` (the layers take turns).
"""
import argparse
import functools

import torch
import torch.nn as nn
from _timing import interleaved, medians

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d


class NaiveShift(nn.BatchNorm2d):
    """The extra pass psBN avoids: BN, then a second op over the output."""

    def forward(self, x):
        return super().forward(x) + 0.1


def _once(layer, x, train):
    if train:
        layer(x).sum().backward()
    else:
        with torch.no_grad():
            layer(x)


def bench(layers, x, train, repeat):
    """Median seconds per layer, after 3 warm-up calls each."""
    for layer in layers.values():
        layer.train(train)
    return medians(
        interleaved(
            {
                name: functools.partial(_once, layer, x, train)
                for name, layer in layers.items()
            },
            repeat,
            warmup=3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--shape',
        type=int,
        nargs=4,
        default=[8, 64, 56, 56],
        metavar=('N', 'C', 'H', 'W'))
    parser.add_argument('--repeat', type=int, default=20)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(*args.shape, device=args.device, requires_grad=True)
    channels = args.shape[1]
    layers = dict(
        BN=nn.BatchNorm2d(channels),
        psBN=PostShiftedBatchNorm2d(channels),
        naive=NaiveShift(channels))
    print(f'shape={tuple(args.shape)} device={args.device} '
          f'threads={torch.get_num_threads()} repeat={args.repeat}')
    for train in (True, False):
        mode = 'train fwd+bwd' if train else 'eval fwd'
        times = bench({
            n: m.to(args.device)
            for n, m in layers.items()
        }, x, train, args.repeat)
        for name, t in times.items():
            print(f'{mode:14s} {name:6s} {t * 1e3:8.3f} ms  '
                  f'x{t / times["BN"]:.3f} vs BN')


if __name__ == '__main__':
    main()
