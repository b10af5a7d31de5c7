# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Filter collapse in one or more checkpoints: table, JSON and plots.

    python tools/analyze_collapse.py CKPT [CKPT ...] [--labels A B ...]
        [--out-dir DIR] [--config CONFIG [--input-size H W]]
        [--gamma-thr 1e-3] [--prob-thr 1e-3]

Reads mmengine / mmdet checkpoints (``{'state_dict': ...}``) and bare
(torchvision-style) state dicts, always with safe loading
(``weights_only=True``). One checkpoint: a per-layer table. Several: side by
side (e.g. a BN run against a psBN run), and, read as a series in the order
given, the collapsed / dead share over training. FLOPs sparsity needs the
graph: pass the model's ``--config``. So does the dead measure's coverage:
with the config only rectified channels (a ReLU reads them first) are
counted; without it a state dict cannot tell a residual-branch BN from one
that a ReLU follows, every BN layer is counted (an upper bound) and the
output says so. Writes ``collapse_analysis.json``,
``gamma_hist.png``, ``gamma_beta_<label>.png`` and ``history.png`` to
``--out-dir``. See mmdet_psbn/analysis/collapse.py for the definitions.
"""
import argparse
import os.path as osp
import re

import torch

from mmdet_psbn.analysis.collapse import (GAMMA_THR, PROB_THR, attach_flops,
                                          bn_layers_in_state_dict,
                                          measure_state_dict)
from mmdet_psbn.analysis.plots import (plot_gamma_beta, plot_gamma_hist,
                                       plot_history)
from mmdet_psbn.utils.checks import (InputError, check_config_path,
                                     check_out_dir)
from mmdet_psbn.utils.io import dump_json, load_checkpoint
from mmdet_psbn.utils.tools import add_debug_arg, run_tool, user_errors

#: At most this many gamma-beta scatter plots (first and last kept).
MAX_SCATTERS = 4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Measure filter collapse in checkpoints')
    parser.add_argument('checkpoints', nargs='+', help='checkpoint files')
    parser.add_argument(
        '--labels',
        nargs='+',
        help='a name per checkpoint (default: file '
        'names)')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/collapse_analysis',
        help='where the JSON report and plots go')
    parser.add_argument(
        '--config',
        help='model config, for FLOPs sparsity and the '
        'rectified channels the dead share covers (the model is built, no '
        'weights are loaded or downloaded)')
    parser.add_argument(
        '--input-size',
        nargs=2,
        type=int,
        default=[512, 512],
        metavar=('H', 'W'),
        help='input size of the FLOPs pass')
    parser.add_argument(
        '--zero-init-layers',
        metavar='REGEX',
        help='treat layers whose '
        'name matches as zero-initialised by design (e.g. "bn3$|bn2$" for '
        'mmdet/torchvision ResNets with zero_init_residual). Without it '
        'only layers whose every gamma is exactly 0 are, and the flag is '
        'passed on along a series of checkpoints')
    parser.add_argument('--gamma-thr', type=float, default=GAMMA_THR)
    parser.add_argument('--prob-thr', type=float, default=PROB_THR)
    add_debug_arg(parser)
    return parser.parse_args(argv)


def load_state_dict(path: str) -> tuple:
    """``(state_dict, meta)`` of a checkpoint file, safely loaded."""
    ckpt = load_checkpoint(path)
    meta = {}
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        meta = ckpt.get('meta') or {}
        ckpt = ckpt['state_dict']
    elif isinstance(ckpt, dict) and isinstance(ckpt.get('model'), dict):
        ckpt = ckpt['model']
    if not isinstance(ckpt, dict) or not any(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise InputError(f'{path!r} holds no state dict of tensors')
    # DDP / DataParallel prefixes
    ckpt = {re.sub(r'^module\.', '', str(k)): v for k, v in ckpt.items()}
    for layer in bn_layers_in_state_dict(ckpt):
        for leaf in ('weight', 'bias'):
            value = ckpt[f'{layer}.{leaf}' if layer else leaf]
            if not value.is_floating_point():
                raise InputError(
                    f'{path!r}: {layer + "." if layer else ""}{leaf} is '
                    f'{value.dtype}, not floating point: not a norm layer\'s '
                    'weights (a corrupted or hand-edited state dict?)')
    return ckpt, meta


def flops_map_from_config(config: str, input_size):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from mmdet_psbn.analysis.flops import channel_flops
    cfg = Config.fromfile(check_config_path(config))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)  # init_weights() is not called
    return channel_flops(model, torch.zeros(1, 3, *input_size))


def format_table(rows, labels) -> str:
    """Per-layer table; with several checkpoints, one column pair each."""
    names = []
    for r in rows:
        for layer in r:
            if layer['name'] not in names:
                names.append(layer['name'])
    by_name = [{layer['name']: layer for layer in r} for r in rows]
    width = max([len(n) for n in names] + [5])
    head = f'{"layer":<{width}} {"kind":<9} {"C":>5}'
    for label in labels:
        head += f' | {label[:18]:>18}'
    lines = [
        head, f'{"":<{width}} {"":<9} {"":>5}' +
        ' | collapsed/dead/min|g|' * len(labels), '-' * len(head)
    ]
    for name in names:
        first = next(b[name] for b in by_name if name in b)
        kinds = '/'.join(
            dict.fromkeys(b[name]['kind'] for b in by_name if name in b))
        line = f'{name:<{width}} {kinds:<9} {first["channels"]:>5}'
        for b in by_name:
            layer = b.get(name)
            if layer is None:
                line += f' | {"-":>18}'
            else:
                z = '*' if layer['zero_init'] else ' '
                line += (f' | {layer["collapsed"]:>4} {layer["dead"]:>4} '
                         f'{layer["min_abs_gamma"]:>8.1e}{z}')
        lines.append(line)
    lines.append('(* zero-init layer: channels still below the threshold '
                 'are not counted)')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    check_out_dir(args.out_dir, '--out-dir')
    if args.zero_init_layers is not None:
        try:
            re.compile(args.zero_init_layers)
        except re.error as e:
            raise InputError(f'--zero-init-layers {args.zero_init_layers!r} '
                             f'is not a regular expression ({e}); e.g. '
                             '"bn3$|bn2$"') from None
    labels = args.labels or [
        osp.splitext(osp.basename(p))[0] for p in args.checkpoints
    ]
    if len(labels) != len(args.checkpoints):
        raise InputError(f'{len(labels)} labels for '
                         f'{len(args.checkpoints)} checkpoints')
    flops = flops_map_from_config(args.config, args.input_size) \
        if args.config else None
    results, stats_list = [], []
    zero_init, previous = (), None
    paths = args.checkpoints
    if len(paths) > 2:
        from mmengine.utils import track_iter_progress
        paths = track_iter_progress(paths)
    for path, label in zip(paths, labels):
        state_dict, meta = load_state_dict(path)
        if args.zero_init_layers:
            zero_init = [
                name for name in bn_layers_in_state_dict(state_dict)
                if re.search(args.zero_init_layers, name)
            ]
        with user_errors(ValueError):  # the thresholds
            stats = measure_state_dict(
                state_dict,
                args.gamma_thr,
                args.prob_thr,
                zero_init,
                previous=previous)
        if not stats.names:
            raise InputError(f'{path!r} has no BatchNorm-like layer '
                             '(weight, bias, running_mean, running_var)')
        previous = stats  # a series: zero-init layers are decided once
        if flops is not None:
            attach_flops(stats, flops)
        stats_list.append(stats)
        results.append(
            dict(
                label=label,
                path=path,
                iter=meta.get('iter'),
                epoch=meta.get('epoch'),
                summary=stats.summary(),
                by_stage=stats.by_stage(),
                layers=stats.per_layer()))

    print(format_table([r['layers'] for r in results], labels))
    print()
    if flops is None:
        print('dead: every BN layer counted (no --config: a state dict does '
              'not tell which layers a ReLU follows), an upper bound')
    else:
        print('dead: rectified channels only (read from the graph of '
              f'{args.config})')
    for r in results:
        s = r['summary']
        print(f'{r["label"]}: collapsed {100 * s["collapsed"]:.2f} %, dead '
              f'{100 * s["dead"]:.2f} % of {int(s["rectified_channels"])} '
              f'channels, zero-init {100 * s["zero_init"]:.2f} % (of which '
              f'dead {100 * s["zero_init_dead"]:.2f} %)' +
              (f', FLOPs sparsity {100 * s["sparsity"]:.2f} %' if 'sparsity' in
               s else ' (FLOPs sparsity: pass --config)') +
              (f'; DIVERGED: {100 * s["diverged"]:.2f} % of all channels have '
               'NaN or inf gamma or beta (not counted as collapsed or dead)'
               if s.get('diverged') else ''))
    if len(stats_list) > 1:
        for prev, cur, r in zip(stats_list, stats_list[1:], results[1:]):
            r['transitions'] = cur.transitions(prev)

    dump_json(
        dict(
            gamma_thr=args.gamma_thr,
            prob_thr=args.prob_thr,
            checkpoints=results),
        osp.join(args.out_dir, 'collapse_analysis.json'))
    plot_gamma_hist(stats_list, labels, osp.join(args.out_dir,
                                                 'gamma_hist.png'))
    keep = list(range(len(stats_list)))
    if len(keep) > MAX_SCATTERS:
        keep = keep[:MAX_SCATTERS // 2] + keep[-(MAX_SCATTERS // 2):]
    for i in keep:
        safe = re.sub(r'[^A-Za-z0-9_.-]', '_', labels[i])
        plot_gamma_beta(stats_list[i], labels[i],
                        osp.join(args.out_dir, f'gamma_beta_{safe}.png'))
    if len(results) > 1:
        history = [
            dict(checkpoint=i, **r['summary']) for i, r in enumerate(results)
        ]
        plot_history(
            history,
            'checkpoint',
            osp.join(args.out_dir, 'history.png'),
            title='Filter collapse over the checkpoints')
    print(f'\nreport and plots in {osp.abspath(args.out_dir)}')


if __name__ == '__main__':
    run_tool(main)
