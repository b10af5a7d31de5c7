# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""RestartSnapshotHook: a snapshot per warm-restart round, evaluated.

A thin hook over :mod:`psbn_cifar.evaluation.ensemble` (predictions, the
ensemble, the table) and :mod:`mmdet_psbn.analysis` (collapse measures,
FLOPs sparsity: the same definitions as :class:`CollapseMonitorHook`).
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import barrier, get_rank, master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim.scheduler import CosineRestartLR
from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu

from mmdet_psbn.analysis.collapse import (ActivationProbe, attach_flops,
                                          measure_model)
from mmdet_psbn.analysis.flops import channel_flops
from mmdet_psbn.utils.io import atomic_write, dump_json
from ..evaluation.ensemble import (ensemble_accuracy, format_round_table,
                                   predict_scores)
from ..registry import HOOKS

__all__ = ['RestartSnapshotHook', 'round_ends']

#: The hook's entry in a checkpoint.
STATE_KEY = 'restart_snapshots'


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def round_ends(schedulers, iters_per_epoch: int) -> List[int]:
    """Iterations (1-based counts) at which the rounds of the first
    ``CosineRestartLR`` in ``schedulers`` end.

    Args:
        schedulers (list or dict): The runner's ``param_schedulers``.
        iters_per_epoch (int): Iterations an epoch, for a scheduler by
            epoch.

    Returns:
        list[int]: The round ends; empty if there is no
        ``CosineRestartLR``.
    """
    flat = []
    if isinstance(schedulers, dict):
        for v in schedulers.values():
            flat.extend(v)
    else:
        flat = list(schedulers or [])
    for s in flat:
        if isinstance(s, CosineRestartLR):
            scale = iters_per_epoch if s.by_epoch else 1
            return [(s.begin + c) * scale for c in s.cumulative_periods]
    return []


@HOOKS.register_module()
class RestartSnapshotHook(Hook):
    """Save, evaluate and measure the model at the end of every round.

    A round is one period of a warm-restart schedule (mmengine's
    ``CosineRestartLR``, by epoch or by iteration; its ``periods`` are read
    from the runner), or ``periods`` epochs given here. At each round end:

    - rank 0 writes ``<work_dir>/<out_dir>/round_<k>.pth`` (weights and
      ``meta``: round, epoch, iteration);
    - the model predicts the validation set (``val_dataloader``, sharded
      under DDP); the softmax scores go to ``round_<k>_scores.npy`` and the
      top-1 accuracy to ``train/round/accuracy``;
    - the collapse measures (``collapsed``; ``dead`` over the rectified
      channels; ``inactive``, the rectified channels never positive on this
      rank's share of the validation set; the FLOPs ``sparsity``; see
      :mod:`mmdet_psbn.analysis.collapse`) go to ``train/round/...``.

    After training, the last ``ensemble`` snapshots are ensembled (averaged
    softmax, :func:`~psbn_cifar.evaluation.ensemble_accuracy`); the table
    (like the paper's Table 1) is logged and ``rounds.json`` written.

    Args:
        periods (Sequence[int], optional): Round lengths in epochs, for a
            schedule that is not a ``CosineRestartLR``. Defaults to None
            (read the scheduler).
        ensemble (int): How many of the last snapshots to ensemble.
            Defaults to 3.
        out_dir (str): Folder in the work dir. Defaults to ``'snapshots'``.
        reference (dict, optional): Paper numbers printed beside ours:
            ``dict(ensemble=94.86, sparsity={5: 5.3}, label='...')``
            (percent).

    Note:
        Every rank must run the hook (the prediction is collective); only
        rank 0 writes files. The rows survive ``--resume`` (checkpoint
        state); the scores are read back from their files.
    """
    priority = 'LOW'

    def __init__(self,
                 periods: Optional[Sequence[int]] = None,
                 ensemble: int = 3,
                 out_dir: str = 'snapshots',
                 reference: Optional[dict] = None) -> None:
        if periods is not None and (not len(periods) or any(
                isinstance(p, bool) or not isinstance(p, int) or p < 1
                for p in periods)):
            raise ValueError(f'periods must be positive integers, got '
                             f'{periods!r}')
        if isinstance(ensemble,
                      bool) or not isinstance(ensemble, int) or ensemble < 1:
            raise ValueError(f'ensemble must be a positive integer, got '
                             f'{ensemble!r}')
        self.periods = list(periods) if periods is not None else None
        self.ensemble = ensemble
        self.out_dir = out_dir
        self.reference = reference
        self.rows: List[dict] = []
        self.ends: List[int] = []
        self._flops_map = None
        self._last = None  # the previous round's CollapseStats
        self.ensemble_result: Optional[dict] = None

    def before_train(self, runner) -> None:
        """Find the round ends (iterations) and make the output folder.

        Args:
            runner (Runner): The runner of the training process.

        Raises:
            ValueError: no ``CosineRestartLR`` and no ``periods``, or no
                ``val_dataloader``.
        """
        per_epoch = len(runner.train_dataloader)
        if self.periods is not None:
            self.ends = list(np.cumsum(self.periods) * per_epoch)
        else:
            self.ends = round_ends(runner.param_schedulers, per_epoch)
        if not self.ends:
            raise ValueError(
                'RestartSnapshotHook found no CosineRestartLR in '
                'param_scheduler; add one or pass periods=[...] (epochs)')
        self.ends = [int(e) for e in self.ends]
        if runner.val_dataloader is None:
            raise ValueError('RestartSnapshotHook needs val_dataloader')
        self.dir = osp.join(runner.work_dir, self.out_dir)
        if get_rank() == 0:
            os.makedirs(self.dir, exist_ok=True)
        runner.logger.info(
            f'RestartSnapshotHook: {len(self.ends)} rounds, ending at '
            f'iterations {self.ends}; snapshots in {self.dir}')

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """End a round (snapshot, prediction, measures) if this iteration is
        the last of one.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the batch in the epoch.
            data_batch (dict or tuple or list, optional): The batch.
            outputs (dict, optional): The outputs of the train step.
        """
        it = runner.iter + 1
        if it in self.ends:
            self._end_round(runner, self.ends.index(it) + 1, it)

    def after_train(self, runner) -> None:
        """Ensemble the last ``ensemble`` snapshots' saved scores, log the per-
        round table and write ``rounds.json`` (rank 0).

        Args:
            runner (Runner): The runner of the training process.
        """
        done = [r['round'] for r in self.rows]
        if not done:
            return
        last = done[-self.ensemble:]
        if get_rank() == 0:
            scores = [np.load(self._scores_path(k)) for k in last]
            labels = np.load(osp.join(self.dir, 'labels.npy'))
            self.ensemble_result = dict(
                rounds=last, accuracy=ensemble_accuracy(scores, labels))
            runner.message_hub.update_scalar('train/round/ensemble_accuracy',
                                             self.ensemble_result['accuracy'])
            self._write(runner)
            runner.logger.info(
                'RestartSnapshotHook: per-round results\n' +
                format_round_table(self.rows, self.ensemble_result,
                                   self.reference))
        barrier()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Save the rows of the finished rounds in the checkpoint
        (``checkpoint['restart_snapshots']``).

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The checkpoint about to be saved, updated in
                place.
        """
        checkpoint[STATE_KEY] = dict(rows=[dict(r) for r in self.rows])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the rows :meth:`before_save_checkpoint` saved, so that the
        table and the ensemble survive ``--resume``.

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The loaded checkpoint.
        """
        state = checkpoint.get(STATE_KEY)
        if state:
            self.rows = [dict(r) for r in state.get('rows', [])]

    # ------------------------------------------------------------ work
    def _scores_path(self, k: int) -> str:
        return osp.join(self.dir, f'round_{k}_scores.npy')

    def _end_round(self, runner, k: int, it: int) -> None:
        model = _unwrap(runner.model)
        self._save_snapshot(runner, model, k, it)
        if self._flops_map is None:
            data = next(iter(runner.val_dataloader))
            inputs = model.data_preprocessor(data, False)['inputs']
            self._flops_map = channel_flops(model, inputs[:1])
        # The activation measure over this rank's share of the val set.
        with ActivationProbe(model, self._flops_map.rectified_layers) as probe:
            scores, labels = predict_scores(runner.model,
                                            runner.val_dataloader)
        stats = measure_model(model, previous=self._last)
        self._last = stats
        attach_flops(stats, self._flops_map).attach_inactive(probe.inactive)
        summary = stats.summary()
        row = dict(
            round=k,
            epoch=runner.epoch + 1,
            iter=it,
            collapsed=summary['collapsed'],
            dead=summary['dead'],
            inactive=summary.get('inactive'),
            sparsity=summary.get('sparsity'),
            accuracy=None)
        if scores is not None:  # rank 0
            np.save(self._scores_path(k), scores)
            np.save(osp.join(self.dir, 'labels.npy'), labels)
            row['accuracy'] = float(100.0 *
                                    (scores.argmax(1) == labels).mean())
        self.rows = [r for r in self.rows if r['round'] != k] + [row]
        hub = runner.message_hub
        for key in ('accuracy', 'sparsity', 'collapsed', 'dead', 'inactive'):
            if row[key] is not None:
                hub.update_scalar(f'train/round/{key}', row[key])
        hub.update_scalar('train/round/round', k)
        if scores is not None:
            sp = row['sparsity']
            runner.logger.info(
                f'RestartSnapshotHook: round {k} (epoch {row["epoch"]}, iter '
                f'{it}): top1 {row["accuracy"]:.2f} %, collapsed '
                f'{100 * row["collapsed"]:.2f} %, dead '
                f'{100 * row["dead"]:.2f} % (of rectified channels), '
                'inactive on the val set ' +
                ('n/a' if row['inactive'] is
                 None else f'{100 * row["inactive"]:.2f} %') +
                ', FLOPs sparsity ' +
                ('n/a' if sp is None else f'{100 * sp:.2f} %'))
            self._write(runner)
        barrier()

    @master_only
    def _save_snapshot(self, runner, model, k: int, it: int) -> None:
        ckpt = dict(
            meta=dict(round=k, epoch=runner.epoch + 1, iter=it),
            state_dict=weights_to_cpu(get_state_dict(model)))
        with atomic_write(osp.join(self.dir, f'round_{k}.pth'), 'wb') as f:
            torch.save(ckpt, f)

    @master_only
    def _write(self, runner) -> None:
        out = dict(
            rounds=self.rows,
            ensemble=self.ensemble_result,
            reference=self.reference,
            snapshots=[
                osp.join(self.dir, f'round_{r["round"]}.pth')
                for r in self.rows
            ])
        dump_json(out, osp.join(self.dir, 'rounds.json'))
