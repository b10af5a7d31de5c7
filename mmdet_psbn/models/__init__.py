# Copyright (c) mmdet-psbn contributors. All rights reserved.
from . import layers  # noqa: F401  registers psBN, psSyncBN
