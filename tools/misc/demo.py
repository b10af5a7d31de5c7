# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The demo behind ``make demo``: pretrain, then finetune with psBN, on CPU.

    python tools/misc/demo.py [--work-dir work_dirs/demo] [--threads 2]
        [--with-bn]

It runs the repository's own tools, one after the other, as a user would:

1. ``tools/misc/make_toy_coco.py data/toy_coco_demo --num-train 256
   --num-val 64``: the toy COCO-format set (nothing is downloaded).
2. Stage 1, the stand-in for ImageNet pretraining:
   ``tools/train.py configs/toy/retinanet_r18_fpn_toy_pretrain.py``, a BN
   RetinaNet-R18 trained from scratch, 8 epochs at lr 0.01.
3. Stage 2, the finetune of the paper's detection experiments:
   ``tools/train.py configs/toy/retinanet_r18_psbn_toy_finetune.py
   --cfg-options load_from=<stage 1 checkpoint>``: psBN in the backbone,
   loaded function-preservingly from the BN weights, ``norm_eval`` and
   ``frozen_stages`` as mmdet's RetinaNet, 4 epochs at lr 0.02.
4. ``tools/test.py`` on stage 2's checkpoint: bbox mAP with pycocotools.

The collapse monitor (``CollapseMonitorHook``) watches both stages.

It ends with a summary: the mAP and where the collapse report and plots are.
``--with-bn`` also finetunes the BN baseline (the same stage 2 with BN) for
comparison, which doubles stage 2's time.

Every stage is seeded and reads data in the main process, and the tools
run with ``--threads`` intra-op threads (2 by default, whatever the machine
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

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA_ROOT = 'data/toy_coco_demo'
DATA_ARGS = ['--num-train', '256', '--num-val', '64']
PRETRAIN = 'configs/toy/retinanet_r18_fpn_toy_pretrain.py'
FINETUNE = {
    'psBN': 'configs/toy/retinanet_r18_psbn_toy_finetune.py',
    'BN': 'configs/toy/retinanet_r18_bn_toy_finetune.py',
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--work-dir', default='work_dirs/demo',
        help='where the stages write (default: %(default)s)')
    parser.add_argument(
        '--threads', type=int, default=2,
        help='intra-op CPU threads of each stage; the figures the README '
        'quotes were made with 2 (default: %(default)s)')
    parser.add_argument(
        '--with-bn', action='store_true',
        help='also finetune the BN baseline, for comparison')
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    return args


class StageFailed(RuntimeError):
    pass


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
    """The metrics of the last evaluation a tool logged in ``work_dir``
    (its newest ``<timestamp>/`` run): tools/test.py's
    ``<timestamp>.json``, or the last validation in tools/train.py's
    ``vis_data/scalars.json``."""
    for run_dir in sorted(glob.glob(osp.join(work_dir, '*_*', '')),
                          reverse=True):
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


def pct(x):
    return f'{100 * x:.1f} %'


def print_collapse(out_dir):
    """What the collapse monitor saw over a run, from its report."""
    with open(osp.join(out_dir, 'report.json')) as f:
        report = json.load(f)
    history = report['history']
    first, last = history[0], history[-1]
    entered = sum(r.get('entered_dead', 0) for r in history)
    recovered = sum(r.get('recovered', 0) for r in history)
    print(f'[demo]   collapse monitor ({len(history)} measurements, '
          f'iterations {first["iter"]}-{last["iter"]}): collapsed '
          f'{pct(first["collapsed"])} -> {pct(last["collapsed"])}, dead '
          f'{pct(first["dead"])} -> {pct(last["dead"])}, FLOPs sparsity '
          f'{pct(last.get("sparsity", 0.0))}; {entered} channel moves into '
          f'the dead region, {recovered} out of it')
    stages = ', '.join(
        f'{stage.split(".")[-1]} {pct(s["collapsed"])}/{pct(s["dead"])}'
        for stage, s in (report.get('by_stage') or {}).items()
        if stage.startswith('backbone.'))
    backbone = [
        r for r in report['layers'] if r['name'].startswith('backbone.')
    ]
    if stages:
        print(f'[demo]   backbone collapsed/dead at the end: {stages}')
    if backbone:
        print('[demo]   smallest |gamma| in the backbone at the end: '
              f'{min(r["min_abs_gamma"] for r in backbone):.3f} '
              '(collapsed means < 0.001)')
    print(f'[demo]   report and plots: {out_dir}/ (' + ', '.join(
        sorted(osp.basename(p)
               for p in glob.glob(osp.join(out_dir, '*.*')))) + ')')


def main(argv=None):
    args = parse_args(argv)
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        PYTHONUNBUFFERED='1')
    work = args.work_dir
    start = time.time()

    run('toy data', ['tools/misc/make_toy_coco.py', DATA_ROOT] + DATA_ARGS,
        env)
    pre_dir = osp.join(work, 'pretrain')
    run('stage 1: pretrain the BN detector from scratch',
        ['tools/train.py', PRETRAIN, '--work-dir', pre_dir], env)
    pretrained = last_checkpoint(pre_dir)

    norms = ['psBN', 'BN'] if args.with_bn else ['psBN']
    results = {}
    for norm in norms:
        ft_dir = osp.join(work, f'finetune_{norm.lower()}')
        run(f'stage 2: finetune with {norm}', [
            'tools/train.py', FINETUNE[norm], '--work-dir', ft_dir,
            '--cfg-options', f'load_from={pretrained}'
        ], env)
        test_dir = osp.join(ft_dir, 'test')
        run(f'evaluate the {norm} finetune', [
            'tools/test.py', FINETUNE[norm],
            last_checkpoint(ft_dir), '--work-dir', test_dir
        ], env)
        results[norm] = dict(
            dir=ft_dir,
            metrics=final_metrics(test_dir))

    print(f'\n[demo] finished in {time.time() - start:.0f} s '
          f'({args.threads} threads)')
    pre = final_metrics(pre_dir)
    print(f'[demo] stage 1, BN from scratch: bbox mAP '
          f'{pre["coco/bbox_mAP"]:.3f}')
    print_collapse(osp.join(pre_dir, 'collapse'))
    for norm, res in results.items():
        m = res['metrics']
        print(f'[demo] stage 2, {norm} finetune: bbox mAP '
              f'{m["coco/bbox_mAP"]:.3f} (AP50 {m["coco/bbox_mAP_50"]:.3f}, '
              f'AP75 {m["coco/bbox_mAP_75"]:.3f})')
        print_collapse(osp.join(res['dir'], 'collapse'))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except StageFailed as e:
        print(f'[demo] error: {e}', file=sys.stderr)
        sys.exit(1)
