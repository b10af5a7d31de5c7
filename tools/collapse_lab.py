# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The collapse lab: Theorem 1, the weight-decay recovery law and filter
collapse in training (real digits; random labels, paper §3.3), as figures,
one JSON of numbers and markdown tables.

    python tools/collapse_lab.py [--quick] [--out-dir docs/] [--skip-training]
                                 [--workers 2] [--threads 2]

Writes ``<out-dir>/lab_theorem1.png``, ``lab_recovery.png``, the training
figures (full mode: ``lab_restarts.png``, ``lab_finetune.png``,
``lab_lr.png``, ``lab_gamma_init.png``, ``lab_early.png``,
``lab_random_labels.png``; quick mode: ``lab_finetune.png``) and
``lab_results[_quick].json`` with ``lab_tables[_quick].md``. The settings
are ``QUICK`` / ``FULL`` in ``mmdet_psbn/lab/__init__.py``; training runs go
to ``--workers`` one-thread processes. See docs/results.md for what each
figure shows and how long each mode took.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

from mmdet_psbn.lab import run_lab
from mmdet_psbn.lab.report import tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='the smaller run that CI checks')
    parser.add_argument('--out-dir', default='docs',
                        help='where figures and the JSON go')
    parser.add_argument('--skip-training', action='store_true',
                        help='only the two cheap parts (Theorem 1, law)')
    parser.add_argument('--threads', type=int, default=2,
                        help='intra-op CPU threads of the Monte Carlo and '
                        'the recovery parts (default: %(default)s)')
    parser.add_argument('--workers', type=int, default=2,
                        help='processes for the training runs, one thread '
                        'each (default: %(default)s)')
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.workers < 1:
        parser.error(f'--workers must be >= 1, got {args.workers}')
    torch.set_num_threads(args.threads)
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.time()
    results = run_lab(quick=args.quick, out_dir=args.out_dir,
                      training=not args.skip_training, log=print,
                      workers=args.workers)
    results['wall_s'] = time.time() - start
    results['command'] = ' '.join(['python', 'tools/collapse_lab.py'] +
                                  (argv if argv is not None else sys.argv[1:]))
    name = 'lab_results_quick.json' if args.quick else 'lab_results.json'
    with open(osp.join(args.out_dir, name), 'w') as f:
        json.dump(results, f, indent=1, default=_jsonable)
    md = 'lab_tables_quick.md' if args.quick else 'lab_tables.md'
    with open(osp.join(args.out_dir, md), 'w') as f:
        f.write(tables(json.loads(json.dumps(results, default=_jsonable))))
    print(f'done in {results["wall_s"]:.0f} s -> {args.out_dir}/{name}')


def _jsonable(o):
    if isinstance(o, (np.integer, )):
        return int(o)
    if isinstance(o, (np.floating, )):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


if __name__ == '__main__':
    main()
