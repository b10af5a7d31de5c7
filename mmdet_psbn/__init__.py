# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""mmdet-psbn: post-shifted BatchNorm against filter collapse.

``import mmdet_psbn`` (or ``custom_imports=dict(imports=['mmdet_psbn'])`` in a
config) loads the core and nothing else:

- :mod:`mmdet_psbn.models.layers`: ``psBN`` and ``psSyncBN``, registered in
  mmengine's *root* ``MODELS`` (so they resolve from mmdet, mmpretrain and
  scope-less builds), their converters and the deploy fold;
- :mod:`mmdet_psbn.analysis`: the collapse measures (plots import
  matplotlib only when they draw);
- :mod:`mmdet_psbn.engine`: ``CollapseMonitorHook``, in the root ``HOOKS``;
- the upstream fixes, listed in :mod:`mmdet_psbn.models.layers.upstream` and
  :mod:`mmdet_psbn.compat` (``docs/upstream.md`` says what importing changes
  outside this package).

Not imported here: :mod:`mmdet_psbn.datasets` (toy and digit data makers),
:mod:`mmdet_psbn.utils` (what the tools share), the CIFAR-10 project
(``psbn_cifar``) and the collapse lab.
"""
from . import compat  # noqa: F401  upstream fixes, applied on import
from . import analysis, engine, models  # noqa: F401  registers the layers
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
