# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Fold psBN's alpha into BN's bias: a checkpoint vanilla mmdet can load.

    python tools/psbn2bn.py IN OUT

Every psBN layer gets ``bias := bias + alpha`` and loses its ``alpha`` key
(:func:`mmdet_psbn.models.layers.fold_psbn_state_dict`), so a config with
``norm_cfg=dict(type='BN')`` and no plugin loads OUT with nothing missing or
unexpected and computes the same outputs. The same for every variant
(``docs/variants.md``): psBN1d/psBN3d/psSyncBN fold into BN1d/BN3d/SyncBN,
psGN into ``dict(type='GN', num_groups=...)``, psIN into IN (affine=True);
"psBN layers" in the output counts them all.
"""
import argparse
import os.path as osp
from collections.abc import Mapping

import torch

from mmdet_psbn.models.layers import find_psbn_prefixes, fold_psbn_state_dict
from mmdet_psbn.utils.checks import InputError
from mmdet_psbn.utils.io import atomic_write, load_checkpoint
from mmdet_psbn.utils.tools import add_debug_arg, run_tool

DESCRIPTION = __doc__.split('\n\n')[0]
EPILOG = """\
IN is an mmengine checkpoint ({'meta': ..., 'state_dict': ..., ...}) or a
bare state dict. It is read with torch.load(weights_only=True): no code in it
runs (mmengine's resume state is allow-listed by ``import mmdet_psbn``).

OUT keeps only 'meta' (plus a 'psbn2bn' record) and the folded 'state_dict';
optimizer, param_schedulers, message_hub, EMA and other resume state are
dropped, since they describe the psBN parameters: use OUT to deploy or to
initialise a BN model, not to --resume. A bare state dict stays bare. OUT is
written atomically (a temporary file, then a rename).
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='psbn2bn.py',
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', metavar='IN', help='psBN checkpoint')
    parser.add_argument('output', metavar='OUT', help='BN checkpoint')
    add_debug_arg(parser)
    return parser.parse_args(argv)


def _non_finite(value) -> bool:
    """Whether ``value`` is a tensor holding NaN or inf."""
    return isinstance(value, torch.Tensor) and (
        value.is_floating_point()
        or value.is_complex()) and not bool(torch.isfinite(value).all())


def convert(checkpoint, path='IN'):
    """Return (the folded checkpoint, the record stored in its meta)."""
    if not isinstance(checkpoint, Mapping):
        raise InputError(f'{path}: expected a checkpoint dict, got '
                         f'{type(checkpoint).__name__}')
    is_mmengine = isinstance(checkpoint.get('state_dict'), Mapping)
    state_dict = checkpoint['state_dict'] if is_mmengine else checkpoint
    prefixes = find_psbn_prefixes(state_dict)
    if not prefixes:
        raise InputError(f'{path}: no psBN layer in this checkpoint (no '
                         "'<layer>.alpha' key): nothing to fold")
    for key, value in state_dict.items():
        if _non_finite(value):
            raise InputError(
                f'{path}: {key!r} holds NaN or inf (a diverged run?): '
                'nothing sensible to deploy; fold a checkpoint from before '
                'the divergence')
    try:
        folded = fold_psbn_state_dict(state_dict)
    except ValueError as e:
        raise InputError(f'{path}: {e}') from e
    alphas = sorted(
        {round(state_dict[p + 'alpha'].item(), 8)
         for p in prefixes})
    record = dict(num_layers=len(prefixes), alpha=alphas)
    if not is_mmengine:
        return folded, record
    meta = dict(checkpoint.get('meta') or {})
    meta['psbn2bn'] = record
    return dict(meta=meta, state_dict=folded), record


def main(argv=None):
    args = parse_args(argv)
    if osp.isdir(args.output):
        raise InputError(f'OUT {args.output!r} is a directory: give the '
                         'file to write, e.g. OUT/model_bn.pth')
    parent = osp.dirname(osp.abspath(args.output))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise InputError(f'OUT {args.output!r} cannot be written: '
                         f'{parent!r} is a file, not a folder')
    if osp.exists(args.output) and osp.samefile(args.input, args.output):
        raise InputError(f'OUT {args.output!r} is IN: give another file '
                         '(IN is never overwritten)')
    checkpoint = load_checkpoint(args.input)
    folded, record = convert(checkpoint, args.input)
    with atomic_write(args.output, 'wb') as f:
        torch.save(folded, f)
    alphas = ', '.join(f'{a:g}' for a in record['alpha'])
    print(f"folded {record['num_layers']} psBN layers (alpha={alphas}) "
          f'into {args.output}')


if __name__ == '__main__':
    run_tool(main)
