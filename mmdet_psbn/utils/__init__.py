# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .checks import (InputError, check_cfg_options, check_checkpoint,
                     check_config_path, check_data_paths)

__all__ = [
    'InputError', 'check_cfg_options', 'check_checkpoint',
    'check_config_path', 'check_data_paths'
]
