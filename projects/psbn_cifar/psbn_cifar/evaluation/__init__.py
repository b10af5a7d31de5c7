# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Classification metrics and snapshot-ensemble evaluation."""
from .ensemble import (ensemble_accuracy, format_round_table,
                       load_snapshot_scores, predict_scores)
from .metrics import Accuracy

__all__ = [
    'Accuracy', 'ensemble_accuracy', 'format_round_table',
    'load_snapshot_scores', 'predict_scores'
]
