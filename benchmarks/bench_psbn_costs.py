# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""What psBN costs, measured in one run with the variants interleaved.

    python benchmarks/bench_psbn_costs.py [--repeat R] [--device cpu|cuda]
        [--quick]

1. op level: BN vs psBN forward+backward (train mode) on ResNet-50 / FPN
   activation shapes;
2. inference: a psBN ResNet-50 (mmdet's) in eval mode vs the same model
   folded to plain BN (``fold_psbn_state_dict``, as tools/psbn2bn.py does);
3. the collapse monitor: ``measure_model`` (and the one-off
   ``channel_flops`` graph pass) against one training step;
4. a RetinaNet-R50-FPN training step (``configs/retinanet_r50_{bn,psbn}.py``
   as built by mmdet: loss forward, backward, SGD step), psBN vs BN.

Every line gives min / median / max over ``--repeat`` runs and the ratio of
medians; the variants of one comparison take turns, so drift in machine
load hits them alike. Ratios, not absolute times, carry over.
"""
import argparse
import os.path as osp
import platform
import statistics
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from _timing import interleaved, time_call

import mmdet_psbn  # noqa: F401  registers psBN
from mmdet_psbn.analysis import measure_model
from mmdet_psbn.analysis.flops import channel_flops
from mmdet_psbn.models.layers import (PostShiftedBatchNorm2d,
                                      fold_psbn_state_dict)

# The collapse lab (its CIFAR ResNet-20 with a head) is not installed.
LAB_ROOT = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'projects',
    'collapse_lab')

# (N, C, H, W) at a 2 x 800x1216-ish input scaled down for a CPU; on a GPU
# pass --full-shapes.
SHAPES_CPU = [(2, 64, 100, 152), (2, 256, 100, 152), (2, 512, 50, 76),
              (2, 1024, 25, 38), (2, 256, 25, 38)]
SHAPES_FULL = [(2, 64, 400, 608), (2, 256, 200, 304), (2, 512, 100, 152),
               (2, 1024, 50, 76), (2, 256, 100, 152)]


def report(title, times, ref):
    med_ref = statistics.median(times[ref])
    for name, t in times.items():
        med = statistics.median(t)
        print(f'{title:34s} {name:14s} min {min(t) * 1e3:9.3f}  median '
              f'{med * 1e3:9.3f}  max {max(t) * 1e3:9.3f} ms   '
              f'x{med / med_ref:.3f} vs {ref}')


def bench_ops(shapes, repeat, device):
    for shape in shapes:
        x = torch.randn(*shape, device=device, requires_grad=True)
        layers = dict(
            BN=nn.BatchNorm2d(shape[1]).to(device),
            psBN=PostShiftedBatchNorm2d(shape[1]).to(device))

        def step(layer):
            return lambda: layer(x).sum().backward()

        times = interleaved({
            k: step(m)
            for k, m in layers.items()
        },
                            repeat,
                            warmup=2)
        report(f'op fwd+bwd {tuple(shape)}', times, 'BN')


def _resnet50(norm):
    from mmdet.models.backbones import ResNet
    return ResNet(50, norm_cfg=dict(type=norm, requires_grad=True))


def bench_inference(repeat, device, size):
    ps, bn = _resnet50('psBN').to(device), _resnet50('BN').to(device)
    ps.eval()  # mmdet's ResNet.train() returns None: no chaining
    bn.eval()
    with torch.no_grad():  # some non-trivial statistics and biases
        for m in ps.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.bias.normal_(0, 0.1)
    missing = bn.load_state_dict(fold_psbn_state_dict(ps.state_dict()))
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(1, 3, size, size, device=device)
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(ps(x), bn(x)))
    print(f'folded BN vs psBN outputs: max abs diff {diff:.2e}')

    def run(m):

        def f():
            with torch.no_grad():
                m(x)

        return f

    times = interleaved(
        dict(BN_folded=run(bn), psBN=run(ps)), repeat, warmup=2)
    report(f'R50 eval fwd 1x3x{size}x{size}', times, 'BN_folded')


def bench_monitor(repeat, device, size, batch):
    if LAB_ROOT not in sys.path:
        sys.path.insert(0, LAB_ROOT)
    from collapse_lab.training import build_net
    cases = [('CIFAR R20 (w16)', build_net('psBN', width=16).to(device),
              torch.randn(batch, 3, 32, 32, device=device),
              torch.randint(0, 10, (batch, ), device=device)),
             ('R50 backbone', _resnet50('psBN').to(device),
              torch.randn(2, 3, size, size, device=device), None)]
    for name, net, x, y in cases:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def train_step():
            out = net(x)
            loss = (
                F.cross_entropy(out, y) if y is not None else sum(
                    o.mean() for o in out))
            opt.zero_grad()
            loss.backward()
            opt.step()

        times = interleaved(
            dict(
                train_step=train_step,
                measure_model=lambda: measure_model(net)),
            repeat,
            warmup=2)
        report(f'monitor, {name}', times, 'train_step')
        seconds, _ = time_call(lambda: channel_flops(net, x[:1]))
        print(f'{"monitor, " + name:34s} channel_flops (once per run) '
              f'{seconds * 1e3:.1f} ms')


def _retinanet(config, device):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(root, config))
    cfg.model.backbone.init_cfg = None  # nothing downloaded
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).to(device)  # torch's default init
    model.train()
    return model


def bench_retinanet_step(repeat, device, hw, batch):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    models = dict(
        BN=_retinanet('configs/retinanet_r50_bn.py', device),
        psBN=_retinanet('configs/retinanet_r50_psbn.py', device))
    models['psBN'].load_state_dict(models['BN'].state_dict())  # same net
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *hw, generator=g).to(device)
    samples = []
    for _ in range(batch):
        xy = torch.rand(5, 2, generator=g) * torch.tensor(hw[::-1]) * 0.6
        wh = 32 + torch.rand(5, 2, generator=g) * 96
        s = DetDataSample(
            metainfo=dict(img_shape=hw, pad_shape=hw, batch_input_shape=hw))
        s.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1).to(device),
            labels=torch.randint(0, 80, (5, ), generator=g).to(device))
        samples.append(s)

    def step(model):
        opt = torch.optim.SGD(
            model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)

        def f():
            losses = model(x, samples, mode='loss')
            loss = sum(
                v if torch.is_tensor(v) else sum(v) for v in losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        return f

    times = interleaved({
        k: step(m)
        for k, m in models.items()
    },
                        repeat,
                        warmup=1)
    report(f'RetinaNet-R50 train step {batch}x3x{hw[0]}x{hw[1]}', times, 'BN')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeat', type=int, default=15)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--full-shapes', action='store_true')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='3 repeats, small images: a smoke run')
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f'--repeat must be >= 1, got {args.repeat}')
    if args.device not in ('cpu', 'cuda'):
        parser.error(f'--device must be cpu or cuda, got {args.device!r}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device here; use --device cpu')
    repeat = 3 if args.quick else args.repeat
    size = 128 if args.quick else 224
    torch.manual_seed(0)
    dev = (
        torch.cuda.get_device_name() if args.device == 'cuda' else
        platform.processor() or platform.machine())
    print(f'device={args.device} ({dev}) torch={torch.__version__} '
          f'threads={torch.get_num_threads()} repeat={repeat}')
    shapes = SHAPES_FULL if args.full_shapes else SHAPES_CPU
    bench_ops(shapes[:2] if args.quick else shapes, repeat, args.device)
    bench_inference(repeat, args.device, size)
    bench_monitor(repeat, args.device, size, 32 if args.quick else 128)
    if args.device == 'cuda' and args.full_shapes:
        hw, batch = (800, 1216), 2  # mmdet's 1x setting, one GPU
    else:
        hw, batch = ((256, 384), 1) if args.quick else ((512, 768), 2)
    bench_retinanet_step(max(3, repeat // 3), args.device, hw, batch)


if __name__ == '__main__':
    main()
