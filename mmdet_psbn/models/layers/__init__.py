# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Post-shifted BatchNorm layers, their converters and deploy folding.

Importing this package registers ``'psBN'`` and ``'psSyncBN'`` in mmengine's
root ``MODELS`` and makes the upstream BN converters and conv-BN fusions keep
alpha (:mod:`.upstream`).
"""
from .psbn import (BN_STATE_KEYS, DEFAULT_ALPHA, PostShiftedBatchNorm2d,
                   PostShiftedSyncBatchNorm, bn_state_entries, check_alpha,
                   convert_to_psbn, find_psbn_prefixes,
                   fold_psbn_entries_on_load, fold_psbn_state_dict, is_psbn)
from .upstream import install_upstream_patches

install_upstream_patches()

__all__ = [
    'BN_STATE_KEYS', 'DEFAULT_ALPHA', 'PostShiftedBatchNorm2d',
    'PostShiftedSyncBatchNorm', 'bn_state_entries', 'check_alpha',
    'convert_to_psbn', 'find_psbn_prefixes', 'fold_psbn_entries_on_load',
    'fold_psbn_state_dict', 'is_psbn', 'install_upstream_patches'
]
