# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The collapse lab (``python tools/collapse_lab.py``), not installed: pure
functions in :mod:`.theorem1` (Theorem 1 derived and Monte-Carlo checked),
:mod:`.recovery` (the weight-decay recovery law with the real layers) and
:mod:`.training` (collapse in training at CPU scale on real digits, and on
random labels, paper §3.3); figures in :mod:`.figures`, tables in
:mod:`.report`; :mod:`.runner` runs them all with one set of settings
(``projects/collapse_lab/settings/*.json``)."""
from .runner import (load_settings, run_lab, run_recovery, run_theorem1,
                     run_training)

__all__ = [
    'load_settings', 'run_lab', 'run_theorem1', 'run_recovery', 'run_training'
]
