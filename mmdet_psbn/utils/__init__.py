# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""What the tools share: input checks and their error type
(:mod:`~mmdet_psbn.utils.checks`), file input and output
(:mod:`~mmdet_psbn.utils.io`). The command-line plumbing,
:mod:`mmdet_psbn.utils.tools`, imports mmengine's config and Runner and is
not imported here."""
from .checks import (DataError, InputError, check_cfg_options,
                     check_config_path, check_data_paths)
from .io import (atomic_dir, atomic_write, check_checkpoint, dump_json,
                 json_default, load_checkpoint)

__all__ = [
    'DataError', 'InputError', 'atomic_dir', 'atomic_write',
    'check_cfg_options', 'check_checkpoint', 'check_config_path',
    'check_data_paths', 'dump_json', 'json_default', 'load_checkpoint'
]
