# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""PreemptionCheckpointHook: on SIGTERM, save the current iteration and stop.

Slurm sends SIGTERM to a job it preempts (or, with ``--signal``, before its
time limit) and kills it after a grace period; torchrun forwards SIGTERM to
every worker. With this hook the run saves a checkpoint at the end of the
iteration in flight, points ``<work_dir>/last_checkpoint`` at it, and ends
with :data:`EXIT_PREEMPTED`, so that the requeued job's ``--resume`` loses
at most that one iteration's work.

Not registered by ``import mmdet_psbn`` (the core registers only psBN-family
layers and the collapse monitor in mmengine's root registries): importing
this module registers it in the root ``HOOKS``. ``tools/train.py
--save-on-sigterm`` adds it without a config change.
"""
import os.path as osp
import signal
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

__all__ = [
    'EXIT_PREEMPTED', 'PreemptionCheckpointHook', 'agree_to_stop',
    'save_current_iteration'
]

#: The exit status of a run stopped by SIGTERM after its checkpoint was
#: saved: 128 + 15, what a shell reports for a process SIGTERM ended, so
#: launchers and batch scripts see "terminated, not finished".
EXIT_PREEMPTED = 128 + signal.SIGTERM


def agree_to_stop(requested: bool) -> bool:
    """Whether any rank was asked to stop (``requested`` on one of them).

    One all-reduce (``max``) of one integer when the run is distributed, so
    that every rank stops after the same iteration; no collective call
    otherwise. Every rank must call it at the same point.
    """
    if get_world_size() == 1:
        return requested
    flag = torch.tensor([int(requested)], dtype=torch.int32)
    all_reduce(flag, op='max')
    return bool(flag.item())


def save_current_iteration(runner) -> str:
    """Save a resumable checkpoint of the iteration that just ended and point
    ``last_checkpoint`` at it; called from ``after_train_iter``.

    The file is ``iter_<k>.pth`` (``k = runner.iter + 1``, the iteration
    mmengine's resume continues after) in the ``CheckpointHook``'s folder
    (the work dir without one), with the optimizer and the lr schedulers.
    If the ``CheckpointHook`` has just saved that very file, it is not
    written again. Rank 0 writes; every rank returns the path.

    Args:
        runner (Runner): The runner of the training process.

    Returns:
        str: The checkpoint's path.
    """
    ckpt_hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
    out_dir = getattr(ckpt_hooks[0], 'out_dir',
                      runner.work_dir) if ckpt_hooks else runner.work_dir
    path = osp.join(out_dir, f'iter_{runner.iter + 1}.pth')
    if runner.message_hub.get_info('last_ckpt') == path and osp.isfile(path):
        return path  # the regular checkpoint of this iteration
    runner.save_checkpoint(
        out_dir,
        osp.basename(path),
        save_optimizer=True,
        save_param_scheduler=True,
        by_epoch=False)  # rank 0 only (master_only)
    runner.message_hub.update_info('last_ckpt', path)
    if is_main_process():
        # Lazily: mmdet_psbn.utils is not part of the core's import.
        from mmdet_psbn.utils.io import atomic_write
        with atomic_write(osp.join(runner.work_dir, 'last_checkpoint')) as f:
            f.write(path)
    return path


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """On SIGTERM, save a checkpoint of the current iteration and stop.

    From ``before_run`` to ``after_run`` a SIGTERM only sets a flag. At the
    end of the iteration in flight (after every other hook's
    ``after_train_iter``: the lr schedulers have stepped, the logger has
    logged it) the ranks agree (:func:`agree_to_stop`), rank 0 saves
    ``iter_<k>.pth`` and ``last_checkpoint``
    (:func:`save_current_iteration`), and the train loop stops. The run
    then ends as usual (``after_train``, ``after_run``), the previous
    SIGTERM handler is restored, and the process exits with
    ``exit_code``.

    Args:
        exit_code (int, optional): The process's exit status after a
            stop, raised as ``SystemExit`` at the end of ``after_run``. None
            returns from ``runner.train()`` instead (then see
            :attr:`stopped`). Defaults to :data:`EXIT_PREEMPTED` (143).

    Note:
        - Resume is exact for an ``IterBasedTrainLoop``: ``--resume``
          continues after iteration ``k`` with the data it would have
          seen. mmengine's ``EpochBasedTrainLoop`` resumes a mid-epoch
          checkpoint at the start of that epoch (its first ``k`` batches are
          trained again); the hook warns about it before training.
        - A SIGTERM during validation is acted on at the end of the next
          training iteration; one after the last iteration does not stop
          anything (the run finishes, exit status 0).
        - Under DDP every rank all-reduces one integer per iteration.
        - A signal handler can only be installed from the main thread;
          elsewhere the hook warns and does nothing.
    """
    priority = 'LOWEST'  # after CheckpointHook and the schedulers

    def __init__(self, exit_code: Optional[int] = EXIT_PREEMPTED) -> None:
        if exit_code is not None and (isinstance(exit_code, bool)
                                      or not isinstance(exit_code, int)
                                      or not 0 <= exit_code <= 255):
            raise ValueError('exit_code must be None or an integer in '
                             f'[0, 255], got {exit_code!r}')
        self.exit_code = exit_code
        self.requested = False
        #: The checkpoint saved on SIGTERM; None until the run is stopped.
        self.stopped: Optional[str] = None
        self._previous = None
        self._installed = False

    def _on_sigterm(self, signum, frame) -> None:
        self.requested = True  # acted on at the end of the iteration

    def before_run(self, runner) -> None:
        """Install the SIGTERM handler (keeping the previous one).

        Args:
            runner (Runner): The runner of the training process.
        """
        try:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        except ValueError as e:  # not the main thread
            runner.logger.warning(
                f'PreemptionCheckpointHook: no SIGTERM handler ({e}); a '
                'SIGTERM will end the run without a checkpoint')

    def before_train(self, runner) -> None:
        """Warn where a resume from a mid-epoch checkpoint is not exact.

        Args:
            runner (Runner): The runner of the training process.
        """
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            runner.logger.warning(
                'PreemptionCheckpointHook: the train loop is '
                f'{type(runner.train_loop).__name__}; mmengine resumes a '
                'checkpoint saved mid-epoch at the start of that epoch')

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """Save and stop when any rank got SIGTERM.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the current batch.
            data_batch (dict or tuple or list, optional): The batch.
            outputs (dict, optional): The model's outputs.
        """
        if not self._installed or self.stopped is not None:
            return
        if not agree_to_stop(self.requested):
            return
        path = save_current_iteration(runner)
        self.stopped = path
        runner.train_loop.stop_training = True
        runner.logger.info(
            f'PreemptionCheckpointHook: SIGTERM received; saved iteration '
            f'{runner.iter + 1} to {path} and stopping (resume with '
            '--resume)')

    def after_run(self, runner) -> None:
        """Restore the previous SIGTERM handler; after a stop, exit with
        ``exit_code``.

        Args:
            runner (Runner): The runner of the training process.
        """
        if self._installed:
            # None: the previous handler was not installed from Python.
            signal.signal(
                signal.SIGTERM,
                signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False
        if self.stopped is not None and self.exit_code is not None:
            raise SystemExit(self.exit_code)
