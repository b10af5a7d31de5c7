# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Post-shifted BatchNorm layers, their converters and deploy folding.

Importing this package registers ``'psBN'`` (``'psBN2d'``), ``'psBN1d'``,
``'psBN3d'``, ``'psSyncBN'``, ``'psGN'`` and ``'psIN'`` (``'psIN2d'``),
``'psIN1d'``, ``'psIN3d'`` in mmengine's root ``MODELS`` and makes the
upstream BN converters and conv-BN fusions keep alpha (:mod:`.upstream`).
"""
from .psbn import (BN_STATE_KEYS, DEFAULT_ALPHA, PostShiftedBatchNorm1d,
                   PostShiftedBatchNorm2d, PostShiftedBatchNorm3d,
                   PostShiftedGroupNorm, PostShiftedInstanceNorm1d,
                   PostShiftedInstanceNorm2d, PostShiftedInstanceNorm3d,
                   PostShiftedSyncBatchNorm, bn_state_entries, check_alpha,
                   convert_to_psbn, find_psbn_prefixes,
                   fold_psbn_entries_on_load, fold_psbn_state_dict,
                   is_post_shifted, is_psbn)
from .upstream import install_upstream_patches

install_upstream_patches()

__all__ = [
    'BN_STATE_KEYS', 'DEFAULT_ALPHA', 'PostShiftedBatchNorm1d',
    'PostShiftedBatchNorm2d', 'PostShiftedBatchNorm3d', 'PostShiftedGroupNorm',
    'PostShiftedInstanceNorm1d', 'PostShiftedInstanceNorm2d',
    'PostShiftedInstanceNorm3d', 'PostShiftedSyncBatchNorm',
    'bn_state_entries', 'check_alpha', 'convert_to_psbn', 'find_psbn_prefixes',
    'fold_psbn_entries_on_load', 'fold_psbn_state_dict', 'is_post_shifted',
    'is_psbn', 'install_upstream_patches'
]
