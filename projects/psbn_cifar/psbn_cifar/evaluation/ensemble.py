# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Snapshot ensembles (Huang et al. 2017) and the per-round table.

A snapshot is the model at the end of a warm-restart round. The ensemble of
the last ``k`` snapshots predicts the class with the highest *average
softmax*: :math:`\\hat y = \\arg\\max_c \\frac1k \\sum_i p_i(c \\mid x)`
(the paper's Table 1 uses the last 3 of 5 rounds).

:func:`predict_scores` runs a model over a dataloader (sharded or not) and
returns the softmax scores in dataset order; the hook
(:class:`~psbn_cifar.engine.RestartSnapshotHook`) and
``tools/ensemble_eval.py`` both use it.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import broadcast, collect_results, get_world_size
from mmengine.model import is_model_wrapper

__all__ = [
    'ensemble_accuracy', 'format_round_table', 'load_snapshot_scores',
    'predict_scores'
]


def predict_scores(model, dataloader) -> Tuple[np.ndarray, np.ndarray]:
    """Softmax scores (N, C) and labels (N,) of ``dataloader``'s dataset, in
    dataset order (by ``sample_idx``).

    The model is put in eval mode and restored afterwards. Under a
    distributed sampler each rank predicts its shard; the results are
    gathered (every rank must call this) and returned on rank 0 (other
    ranks get ``(None, None)``).

    Note:
        Under DDP the ranks hold equal parameters but their own BN running
        statistics (each rank updates them from its own last batch; DDP
        broadcasts rank 0's only at the next training forward). So that
        every rank predicts with the model rank 0 saves, the buffers are
        first broadcast from rank 0, as that next forward would do.
    """
    if get_world_size() > 1:
        inner = model.module if is_model_wrapper(model) else model
        for buf in inner.buffers():
            broadcast(buf, 0)
    training = model.training
    model.eval()
    part = []
    try:
        with torch.no_grad():
            for data in dataloader:
                for s in model.val_step(data):
                    part.append((int(s.metainfo['sample_idx']),
                                 s.pred_score.float().cpu().numpy(),
                                 int(s.gt_label.item())))
    finally:
        model.train(training)
    size = len(dataloader.dataset)
    if get_world_size() > 1:
        gathered = collect_results(part, size * get_world_size(), 'cpu')
        if gathered is None:
            return None, None
        part = gathered
    by_idx = {i: (score, label) for i, score, label in part}
    if sorted(by_idx) != list(range(size)):
        raise RuntimeError(f'predicted {len(by_idx)} of {size} samples; '
                           'the dataloader must cover the whole dataset')
    scores = np.stack([by_idx[i][0] for i in range(size)])
    labels = np.array([by_idx[i][1] for i in range(size)], dtype=np.int64)
    return scores, labels


def ensemble_accuracy(scores: Sequence[np.ndarray],
                      labels: np.ndarray) -> float:
    """Top-1 accuracy (percent) of the averaged softmax of ``scores``."""
    if not len(scores):
        raise ValueError('no snapshot scores to ensemble')
    mean = np.mean(np.stack(scores), axis=0)
    return float(100.0 * (mean.argmax(1) == labels).mean())


def load_snapshot_scores(model, checkpoints: Sequence[str],
                         dataloader) -> Tuple[List[np.ndarray], np.ndarray]:
    """Load each checkpoint into ``model`` in turn and predict.

    Returns the list of score arrays and the labels.
    """
    from mmengine.runner import load_checkpoint
    inner = model.module if is_model_wrapper(model) else model
    out, labels = [], None
    for path in checkpoints:
        load_checkpoint(
            inner, path, map_location='cpu', strict=True, logger='silent')
        scores, labels = predict_scores(model, dataloader)
        out.append(scores)
    return out, labels


def format_round_table(rows: Sequence[Dict],
                       ensemble: Optional[Dict] = None,
                       reference: Optional[Dict] = None) -> str:
    """The per-round table, like the paper's Table 1.

    ``rows``: dicts with ``round``, ``epoch``, ``accuracy`` (percent),
    ``sparsity``, ``collapsed`` and ``dead`` (fractions). ``ensemble``:
    ``dict(rounds=[...], accuracy=...)``. ``reference``: the paper's
    numbers to print beside, e.g. ``dict(ensemble=94.86,
    sparsity={5: 5.3}, label='Zhou et al. 2020')`` (percent).
    """
    reference = reference or {}
    ref_sp = reference.get('sparsity') or {}
    lines = [
        'round  epoch  top1 (%)  sparsity (%)  collapsed (%)  dead (%)' +
        ('  paper sparsity (%)' if ref_sp else '')
    ]
    for r in rows:
        sp = r.get('sparsity')
        line = (f'{r["round"]:>5}  {r["epoch"]:>5}  {r["accuracy"]:>8.2f}  '
                f'{"n/a" if sp is None else f"{100 * sp:.2f}":>12}  '
                f'{100 * r["collapsed"]:>13.2f}  {100 * r["dead"]:>8.2f}')
        ref = ref_sp.get(r['round'], ref_sp.get(str(r['round'])))
        if ref is not None:
            line += f'  {ref:>18.1f}'
        lines.append(line)
    if ensemble:
        line = (f'ensemble of rounds {ensemble["rounds"]}: top1 '
                f'{ensemble["accuracy"]:.2f} %')
        if reference.get('ensemble') is not None:
            label = reference.get('label')
            line += (f'  (paper: {reference["ensemble"]:.2f} %' +
                     (f', {label}' if label else '') + ')')
        lines.append(line)
    return '\n'.join(lines)
