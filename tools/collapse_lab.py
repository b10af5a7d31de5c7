# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The collapse lab: Theorem 1, the weight-decay recovery law and filter
collapse in training (real digits; random labels, paper §3.3), as figures,
one JSON of numbers and markdown tables.

    python tools/collapse_lab.py [--quick | --settings FILE] [--out-dir DIR]
                                 [--skip-training] [--workers 2] [--threads 2]

The full run (the default settings) writes into ``docs/``, whose figures
and tables it makes; ``--quick`` and ``--settings`` write into
``work_dirs/collapse_lab`` unless ``--out-dir`` says otherwise, so that a
trial run never replaces the documented figures. Writes
``<out-dir>/lab_theorem1.png``, ``lab_recovery.png``, the training
figures (full mode: ``lab_restarts.png``, ``lab_finetune.png``,
``lab_lr.png``, ``lab_gamma_init.png``, ``lab_early.png``,
``lab_random_labels.png``; quick mode: ``lab_finetune.png``),
``lab_optimizers.png`` (docs/optimizers.md) and
``lab_results[_<mode>].json`` with ``lab_tables[_<mode>].md``, ``<mode>``
being the settings file's name (none for ``full``). The settings are
``projects/collapse_lab/settings/{quick,full}.json``; the lab itself is
``projects/collapse_lab/collapse_lab`` (not installed: this script puts it
on ``sys.path``). Training runs go to ``--workers`` one-thread processes.
See docs/results.md for what each figure shows and how long each mode took.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import torch

from mmdet_psbn.utils.checks import InputError, check_out_dir
from mmdet_psbn.utils.io import atomic_write, dump_json, json_default
from mmdet_psbn.utils.tools import add_debug_arg, run_tool

LAB_ROOT = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'projects',
    'collapse_lab')
if LAB_ROOT not in sys.path:
    sys.path.insert(0, LAB_ROOT)

from collapse_lab import load_settings, run_lab  # noqa: E402
from collapse_lab.report import tables  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        '--quick',
        action='store_true',
        help='the smaller run that CI checks (the settings '
        '"quick")')
    which.add_argument(
        '--settings',
        metavar='FILE',
        help='a settings JSON file, or the name of one in '
        'projects/collapse_lab/settings (default: full)')
    parser.add_argument(
        '--out-dir',
        help='where figures and the JSON go (default: docs for the full '
        'run, work_dirs/collapse_lab for --quick and --settings)')
    parser.add_argument(
        '--skip-training',
        action='store_true',
        help='only the two cheap parts (Theorem 1, law)')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='intra-op CPU threads of the Monte Carlo and '
        'the recovery parts (default: %(default)s)')
    parser.add_argument(
        '--workers',
        type=int,
        default=2,
        help='processes for the training runs, one thread '
        'each (default: %(default)s)')
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise InputError(f'--threads must be >= 1, got {args.threads}')
    if args.workers < 1:
        raise InputError(f'--workers must be >= 1, got {args.workers}')
    if args.out_dir is None:
        args.out_dir = ('docs' if not (args.quick or args.settings) else
                        osp.join('work_dirs', 'collapse_lab'))
    check_out_dir(args.out_dir, '--out-dir')
    settings = args.settings or ('quick' if args.quick else 'full')
    shape = ('give quick, full or a JSON file shaped like '
             'projects/collapse_lab/settings/quick.json')
    try:
        cfg = load_settings(settings)
    except FileNotFoundError as e:
        raise InputError(f'--settings: {e}') from e
    except (OSError, ValueError) as e:  # not JSON (or not UTF-8)
        raise InputError(f'--settings {settings!r} is not a settings file '
                         f'({type(e).__name__}: {e}): {shape}') from e
    if not isinstance(cfg, dict):
        raise InputError(f'--settings {settings!r} holds a JSON '
                         f'{type(cfg).__name__}, not an object: {shape}')
    missing = sorted(set(load_settings('quick')) - set(cfg))
    if missing:
        raise InputError(f'--settings {settings!r} lacks {missing}: {shape}')
    mode = osp.splitext(osp.basename(settings))[0]
    suffix = '' if mode == 'full' else f'_{mode}'
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    results = run_lab(
        cfg,
        mode=mode,
        out_dir=args.out_dir,
        training=not args.skip_training,
        log=print,
        workers=args.workers)
    results['wall_s'] = time.time() - start
    results['command'] = ' '.join(['python', 'tools/collapse_lab.py'] +
                                  (argv if argv is not None else sys.argv[1:]))
    name = f'lab_results{suffix}.json'
    dump_json(results, osp.join(args.out_dir, name))
    with atomic_write(osp.join(args.out_dir, f'lab_tables{suffix}.md')) as f:
        f.write(tables(json.loads(json.dumps(results, default=json_default))))
    print(f'done in {results["wall_s"]:.0f} s -> {args.out_dir}/{name}')


if __name__ == '__main__':
    run_tool(main)
