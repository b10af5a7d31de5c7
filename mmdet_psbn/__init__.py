# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""mmdet-psbn: post-shifted BatchNorm against filter collapse.

``import mmdet_psbn`` (or ``custom_imports=dict(imports=['mmdet_psbn'])`` in a
config) registers everything this package provides in mmengine's *root*
registries, so the names resolve from mmdet, mmpretrain and scope-less
builds alike, and applies the fixes of :mod:`mmdet_psbn.compat`.
"""
from . import compat  # noqa: F401  upstream fixes, applied on import
from . import models  # noqa: F401  registers psBN, psSyncBN
from . import engine  # noqa: F401  registers CollapseMonitorHook
from . import datasets, evaluation  # noqa: F401  CIFAR-10 data, metrics
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
