# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Epoch time of CIFAR-10 training: the Runner's two data paths against a
bare PyTorch loop.

    python benchmarks/bench_cifar_epoch.py [--device cpu|cuda]
        [--num-train N | --data-root DIR] [--repeat R] [--batch-size B]

One epoch of ResNet-20 with psBN (``projects/psbn_cifar/configs/
resnet20_psbn_restart9x100{_device,}.py``), batch 128, SGD (lr 0.1,
momentum 0.9, weight decay 5e-4), timed three ways in one run, taking turns
(``_timing.interleaved``) after one warm-up epoch each:

* ``runner+device``: the mmengine Runner on the fast path (DeviceCIFAR10,
  CropFlipDataPreprocessor);
* ``runner+loader``: the Runner on the ordinary path (CIFAR10 with
  per-sample RandomCrop / RandomFlip in the config's DataLoader workers);
* ``bare``: a plain loop over the same uint8 tensor on the device: a
  shuffled index slice, ``random_crop_flip``, normalisation, forward, cross
  entropy, backward, ``SGD.step``.

The Runners keep the configs' default hooks (timer, logger, LR schedule,
sampler seed) but not the custom hooks (collapse monitor, snapshots),
validation or checkpoints, which measure rather than train. Each is set up
and warmed by ``runner.train()`` for one epoch; a timed epoch is
``runner.train_loop.run_epoch()``: every hook and iteration of an epoch.
Prints min / median / max seconds per epoch and the ratio of each median to
the bare loop's. Data: a toy CIFAR root of ``--num-train`` images (made with
``make_toy_cifar`` in a temporary folder) unless ``--data-root`` names a
real one.
"""
import argparse
import os
import os.path as osp
import platform
import shutil
import statistics
import sys
import tempfile

import torch
import torch.nn.functional as F
from _timing import interleaved

CONFIGS = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'projects', 'psbn_cifar',
    'configs')
DEVICE_CONFIG = osp.join(CONFIGS, 'resnet20_psbn_restart9x100_device.py')
LOADER_CONFIG = osp.join(CONFIGS, 'resnet20_psbn_restart9x100.py')


def device_name(device):
    if device == 'cuda':
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next(
                line.split(':', 1)[1].strip() for line in f
                if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{name}, {torch.get_num_threads()} torch threads'


def build_runner(config, data_root, work_dir, batch_size):
    """The config's Runner, trimmed to training (see the module doc)."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.experiment_name = osp.basename(work_dir)
    cfg.log_level = 'WARNING'
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.dataset.data_root = data_root
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator',
                'test_dataloader', 'test_cfg', 'test_evaluator'):
        cfg[key] = None
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint = None
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1)
    return Runner.from_cfg(cfg)


def bare_loop(config, data_root, batch_size, device):
    """One epoch of the plain loop as a closure, on the same model and data as
    the Runners."""
    from mmengine.config import Config

    from psbn_cifar.datasets.cifar_device import DeviceCIFAR10
    from psbn_cifar.models import random_crop_flip
    from psbn_cifar.registry import MODELS
    cfg = Config.fromfile(config)
    model = MODELS.build(cfg.model).to(device)
    model.init_weights()
    data = DeviceCIFAR10(data_root=data_root, device=device).tensors()
    images, labels = data['inputs'], data['gt_label']
    mean = torch.tensor(
        cfg.data_preprocessor.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(
        cfg.data_preprocessor.std, device=device).view(1, 3, 1, 1)
    opt = cfg.optim_wrapper.optimizer
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=opt.lr,
        momentum=opt.momentum,
        weight_decay=opt.weight_decay)
    gen = torch.Generator(device=device).manual_seed(0)

    def epoch():
        model.train()
        order = torch.randperm(len(images), device=device, generator=gen)
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            x = random_crop_flip(images.index_select(0, idx), 32, 4, 0.5, gen)
            logits = model((x.float() - mean) / std, mode='tensor')
            loss = F.cross_entropy(logits, labels.index_select(0, idx))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--device',
        choices=['cpu', 'cuda'],
        help='defaults to cuda when available')
    parser.add_argument(
        '--num-train',
        type=int,
        default=1280,
        help='images in the toy training set (an epoch); '
        'default 1280: 10 iterations of 128')
    parser.add_argument(
        '--data-root',
        help='a real CIFAR-10 root instead '
        'of the toy set (50 000 images an epoch)')
    parser.add_argument(
        '--repeat',
        type=int,
        default=5,
        help='timed epochs per path (after one warm-up)')
    parser.add_argument('--batch-size', type=int, default=128)
    args = parser.parse_args()
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available here')
    if device == 'cpu':
        # The Runner puts the model where mmengine's get_device() says.
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    if args.repeat < 1 or args.batch_size < 1 or args.num_train < 5:
        parser.error('need --repeat >= 1, --batch-size >= 1 and '
                     '--num-train >= 5')

    import psbn_cifar  # noqa: F401  the CIFAR project
    from psbn_cifar.datasets.cifar import make_toy_cifar
    tmp = tempfile.mkdtemp(prefix='bench_cifar_epoch.')
    try:
        if args.data_root:
            data_root, what = args.data_root, f'CIFAR-10 at {args.data_root}'
        else:
            data_root = make_toy_cifar(
                osp.join(tmp, 'cifar'), num_train=args.num_train, num_test=10)
            what = f'toy CIFAR root, {args.num_train} images'
        runners = dict(
            device=build_runner(DEVICE_CONFIG, data_root,
                                osp.join(tmp, 'runner_device'),
                                args.batch_size),
            loader=build_runner(LOADER_CONFIG, data_root,
                                osp.join(tmp, 'runner_loader'),
                                args.batch_size))
        bare = bare_loop(DEVICE_CONFIG, data_root, args.batch_size, device)
        for runner in runners.values():  # set up + warm-up epoch
            runner.train()
        bare()
        paths = {
            f'runner+{k}': r.train_loop.run_epoch
            for k, r in runners.items()
        }
        paths['bare'] = bare
        times = interleaved(paths, args.repeat, warmup=0)  # warmed above
        loader = runners['loader'].train_dataloader
        n = len(runners['device'].train_dataloader.dataset)
        print(f'command: python {" ".join(sys.argv)}')
        print(f'device: {device} ({device_name(device)}); torch '
              f'{torch.__version__}')
        print(f'data: {what}; batch {args.batch_size}, '
              f'{-(-n // args.batch_size)} iterations an epoch; model '
              f'ResNet-20 psBN; {args.repeat} timed epochs a path after 1 '
              f'warm-up; runner+loader uses {loader.num_workers} DataLoader '
              'workers')
        base = statistics.median(times['bare'])
        print(f'{"path":14s} {"min s":>8s} {"median s":>9s} {"max s":>8s}  '
              'median / bare')
        for name, t in times.items():
            med = statistics.median(t)
            print(f'{name:14s} {min(t):8.3f} {med:9.3f} {max(t):8.3f}  '
                  f'x{med / base:.3f}')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
