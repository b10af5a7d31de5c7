# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Op-level cost of psBN against BN (and a naive ``bn(x) + alpha``).

    python benchmarks/bench_psbn_op.py [--shape N C H W] [--repeat R]
        [--device cpu|cuda]

Prints the median time of forward+backward in train mode and of forward in
eval mode, and the ratios to BN measured in this one run. Ratios, not
absolute times, are what carries over between machines.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

from mmdet_psbn.models.layers import PostShiftedBatchNorm2d


class NaiveShift(nn.BatchNorm2d):
    """The extra pass psBN avoids: BN, then a second op over the output."""

    def forward(self, x):
        return super().forward(x) + 0.1


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def _once(layer, x, train, device):
    _sync(device)
    start = time.perf_counter()
    if train:
        layer(x).sum().backward()
    else:
        with torch.no_grad():
            layer(x)
    _sync(device)
    return time.perf_counter() - start


def bench(layers, x, train, repeat, device):
    """Median time per layer; the layers take turns, so drift in machine
    load hits them alike."""
    times = {name: [] for name in layers}
    for layer in layers.values():
        layer.train(train)
        for _ in range(3):  # warm-up
            _once(layer, x, train, device)
    for _ in range(repeat):
        for name, layer in layers.items():
            times[name].append(_once(layer, x, train, device))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--shape', type=int, nargs=4, default=[8, 64, 56, 56],
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
        times = bench({n: m.to(args.device)
                       for n, m in layers.items()}, x, train, args.repeat,
                      args.device)
        for name, t in times.items():
            print(f'{mode:14s} {name:6s} {t * 1e3:8.3f} ms  '
                  f'x{t / times["BN"]:.3f} vs BN')


if __name__ == '__main__':
    main()
