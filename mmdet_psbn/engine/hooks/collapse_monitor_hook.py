# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CollapseMonitorHook: filter collapse, measured while a model trains.

A thin hook over :mod:`mmdet_psbn.analysis`: the measures and their
definitions live there.
"""
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from mmdet_psbn.analysis.collapse import (ActivationProbe, CollapseStats,
                                          attach_flops, attach_rectified,
                                          check_thresholds, measure_model,
                                          norm_layers)
from mmdet_psbn.analysis.flops import channel_flops
from mmdet_psbn.models.layers.psbn import is_post_shifted

__all__ = [
    'CollapseMonitorHook', 'psbn_decay_problems', 'decay_kind',
    'psbn_decay_notes'
]

#: The hook's entry in a checkpoint.
STATE_KEY = 'collapse_monitor'


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _param_groups(optimizer):
    """``(optimizer, group, parameter)`` for every parameter of an optimizer or
    of a dict of them (``OptimWrapperDict``'s)."""
    optimizers = optimizer.values() if isinstance(optimizer,
                                                  dict) else [optimizer]
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group['params']:
                yield opt, group, p


def psbn_decay_problems(model, optimizer) -> Dict[str, List[str]]:
    """PsBN layers whose parameters cannot feel weight decay.

    Returns ``{'frozen': [...], 'no_decay': [...]}``: layer names whose
    weight or bias has ``requires_grad=False`` (e.g. ``frozen_stages``), and
    trainable ones whose optimizer group has ``weight_decay == 0`` (e.g.
    ``norm_decay_mult=0``) or that are in no group at all.
    """
    decay = {
        id(p): group.get('weight_decay', 0.0)
        for _, group, p in _param_groups(optimizer)
    }
    out = dict(frozen=[], no_decay=[])
    for name, m in model.named_modules():
        if not is_post_shifted(m):
            continue
        params = [p for p in (m.weight, m.bias) if p is not None]
        if not params:
            continue
        if not all(p.requires_grad for p in params):
            out['frozen'].append(name)
        elif not all(decay.get(id(p), 0.0) > 0 for p in params):
            out['no_decay'].append(name)
    return out


#: Adaptive optimizers whose ``weight_decay`` is an L2 term added to the
#: gradient (unless ``decoupled_weight_decay=True``).
_ADAPTIVE = (torch.optim.Adam, torch.optim.Adamax, torch.optim.NAdam,
             torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad,
             torch.optim.Adadelta)

#: What the decay of each kind does to a dead psBN channel (derived and
#: measured in docs/optimizers.md); ``{opt}`` is the optimizer's class name.
DECAY_NOTES = {
    'sgd': ('{opt}: weight decay scales a dead channel\'s gamma and beta '
            'together (by 1 - lr*wd per step; lr/(1 - momentum) at steady '
            'state with momentum), so psBN\'s (beta + alpha)/|gamma| rises '
            'and its dead channels recover (BN\'s stay dead).'),
    'decoupled': ('{opt}: decoupled weight decay scales a dead channel\'s '
                  'gamma and beta together by 1 - lr*wd per step, so psBN\'s '
                  'dead channels recover as under SGD without momentum; at '
                  'a small lr*wd that takes ~1/(lr*wd) steps or more.'),
    'adaptive_l2': ('{opt} with L2 weight_decay: the decay\'s gradient is '
                    'normalised per coordinate, so a dead channel\'s gamma '
                    'and beta each move towards 0 by up to lr per step '
                    'whatever weight_decay is: psBN\'s dead channel fires '
                    'again once beta > -alpha (|beta + alpha|/lr steps or '
                    'more) but with gamma ~ 0 (collapsed), not by the SGD '
                    'law; BN\'s goes to gamma = beta = 0. Prefer decoupled '
                    'decay (AdamW).'),
    'other': ('{opt}: psBN\'s recovery by weight decay was derived for '
              'SGD, Adam and AdamW only; whether it applies here is not '
              'known.'),
}


def decay_kind(optimizer, group: dict) -> str:
    """How the weight decay of ``optimizer``'s param ``group`` acts on a
    channel with zero data gradient: ``'none'`` (``weight_decay`` 0),
    ``'sgd'`` (L2 through SGD), ``'decoupled'`` (AdamW, or
    ``decoupled_weight_decay=True``), ``'adaptive_l2'`` (L2 through an
    adaptive optimizer, e.g. Adam's ``weight_decay``) or ``'other'``."""
    if group.get('weight_decay', 0.0) <= 0:
        return 'none'
    if isinstance(optimizer, torch.optim.AdamW) or group.get(
            'decoupled_weight_decay', False):
        return 'decoupled'
    if isinstance(optimizer, torch.optim.SGD):
        return 'sgd'
    if isinstance(optimizer, _ADAPTIVE):
        return 'adaptive_l2'
    return 'other'


def psbn_decay_notes(model, optimizer) -> List[Tuple[str, str]]:
    """``(kind, message)`` for each optimizer kind (:func:`decay_kind`,
    ``'none'`` left out: see :func:`psbn_decay_problems`) that decays some psBN
    parameter of ``model``, in the order met; the messages are
    :data:`DECAY_NOTES`."""
    where = {
        id(p): (opt, decay_kind(opt, group))
        for opt, group, p in _param_groups(optimizer)
    }
    notes = {}
    for m in model.modules():
        if not is_post_shifted(m):
            continue
        for p in (m.weight, m.bias):
            if p is None or id(p) not in where:
                continue
            opt, kind = where[id(p)]
            if kind != 'none':
                notes.setdefault((type(opt).__name__, kind), None)
    return [(kind, DECAY_NOTES[kind].format(opt=name)) for name, kind in notes]


@HOOKS.register_module()
class CollapseMonitorHook(Hook):
    """Measure filter collapse during training and report it.

    At the start of training (the loaded or initial weights), every
    ``interval`` iterations and at the end of each epoch it measures every
    norm layer (see :mod:`mmdet_psbn.analysis.collapse`) and puts into the
    message hub, so that the logger, the JSON scalar log, TensorBoard and
    W&B all get them:

    - ``train/collapse/collapsed``: share of channels with |γ| < 1e-3
      (zero-init layers excluded, see the analysis module);
    - ``train/collapse/dead``: share of the *rectified* channels (those
      whose output goes into a ReLU first, read from the graph) in the
      region where they never fire; before the graph is known (the
      start-of-training measurement) every layer is taken as rectified,
      and the row is corrected once the graph is read at the first
      iteration;
    - ``train/collapse/inactive``: share of the rectified channels whose
      output was never positive in the measured iteration's own training
      forward (the activation measure);
    - ``train/collapse/sparsity``: share of conv FLOPs the collapsed
      channels remove;
    - ``train/collapse/entered_dead``, ``train/collapse/recovered``:
      rectified channels that entered / left the dead region since the
      previous measurement;
    - ``train/collapse/diverged``: share of channels whose γ or β is NaN
      or inf, a diverged run (warned about once), left out of the other
      shares: such a channel is neither collapsed nor healthy;
    - with ``by_stage``, ``train/collapse/<stage>/dead``, ``.../collapsed``
      (and ``.../inactive``) per stage (``backbone.layer1``...).

    At the end of training, rank 0 writes ``<work_dir>/<out_dir>/
    report.json`` (per-layer table, per-stage table, history) and the plots
    ``gamma_hist.png``, ``gamma_beta.png`` and ``history.png``.

    Args:
        interval (int): Measure every ``interval`` training iterations.
            Defaults to 500.
        gamma_thr (float): |γ| below this is collapsed. Defaults to 1e-3.
        prob_thr (float): P(y > 0) below this is dead. Defaults to 1e-3.
        jump_thr (float): Warn when the dead share rises by more than this
            (absolute) between two measurements, e.g. after a learning-rate
            restart. Defaults to 0.02.
        by_stage (bool): Also log per-stage shares. Defaults to True.
        flops (bool): Report FLOPs sparsity. The graph it comes from (one
            extra forward pass of one image, in eval mode under no_grad, at
            the first iteration) also tells which channels are rectified;
            it is read whatever this flag says. Defaults to True.
        activation (bool): Take the activation measure (``inactive``) from
            the training forward of each measured iteration (its weights
            are those before the iteration's own update, one step before
            the other measures), and for the start-of-training measurement
            from the first iteration's forward (the same weights), with
            forward hooks present only in those iterations: one reduction
            per norm layer, and training is unchanged (bit-identical).
            Defaults to True.
        out_dir (str): Folder in the work dir for the report and plots.
            Defaults to ``'collapse'``.
        zero_init_layers (str, optional): A regular expression
            (``re.search`` on the layer name): matching norm layers are
            zero-init layers (reported apart while below ``gamma_thr``) even
            when their γ are no longer exactly 0. For a finetune from a
            checkpoint trained briefly with ``zero_init_residual``, e.g.
            ``'bn3$'`` for mmdet's ResNet-50 (``'bn2$'`` for ResNet-18).
            Layers all-zero at the first measurement are found without it.
            Defaults to None.

    Note:
        - Each measurement makes one host-device copy (one synchronisation)
          and no collective call; each rank measures its own replica (they
          are equal under DDP). The model is unwrapped from DDP.
        - psBN revives dead channels only through weight decay. Before
          training the hook warns about psBN layers that are trainable but
          get no weight decay (``norm_decay_mult=0``), and reports those that
          are frozen (``requires_grad=False``, e.g. ``frozen_stages``). It
          also says, per optimizer, what its decay does to a dead psBN
          channel (:data:`DECAY_NOTES`, docs/optimizers.md): info for SGD
          and AdamW, a warning for Adam-like L2 decay and for others.
        - The last measurement and the history are saved in checkpoints and
          restored by ``--resume``, so transitions continue across it.
    """
    priority = 'NORMAL'  # before LoggerHook, so a measurement is logged

    # in the same iteration

    def __init__(self,
                 interval: int = 500,
                 gamma_thr: float = 1e-3,
                 prob_thr: float = 1e-3,
                 jump_thr: float = 0.02,
                 by_stage: bool = True,
                 flops: bool = True,
                 out_dir: str = 'collapse',
                 zero_init_layers: Optional[str] = None,
                 activation: bool = True) -> None:
        if isinstance(interval,
                      bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'interval must be a positive integer, got '
                             f'{interval!r}')
        check_thresholds(gamma_thr, prob_thr)
        if not (isinstance(jump_thr, (int, float))
                and not isinstance(jump_thr, bool) and 0 < jump_thr <= 1):
            raise ValueError(f'jump_thr must be in (0, 1], got {jump_thr!r}')
        for name, value in (('by_stage', by_stage), ('flops', flops),
                            ('activation', activation)):
            if not isinstance(value, bool):
                raise ValueError(f'{name} must be True or False, got '
                                 f'{value!r}')
        if not isinstance(out_dir, str) or not out_dir.strip():
            raise ValueError('out_dir must be a folder name (in the work '
                             f'dir), got {out_dir!r}')
        self.interval = interval
        self.gamma_thr = gamma_thr
        self.prob_thr = prob_thr
        self.jump_thr = jump_thr
        self.by_stage = by_stage
        self.flops = flops
        self.activation = activation
        self.out_dir = out_dir
        try:
            self.zero_init_layers = re.compile(
                zero_init_layers) if zero_init_layers is not None else None
        except (re.error, TypeError) as e:
            raise ValueError(
                'zero_init_layers must be a regular expression matching '
                f'norm layer names (e.g. "bn3$"), got {zero_init_layers!r}: '
                f'{e}') from None
        self._last: Optional[CollapseStats] = None
        self._history: List[dict] = []
        self._flops_map = None
        self._flops_failed = False
        self._probe: Optional[ActivationProbe] = None
        self._start_pending = False
        self._warned_diverged = False
        # (iteration label, inactive masks) of the last probe taken
        self._inactive: Optional[tuple] = None

    # ------------------------------------------------------------ hooks
    def before_train(self, runner) -> None:
        """Check psBN's weight decay and take the start-of-training measurement
        (the loaded or initial weights).

        On a fresh start (iteration 0, also with ``load_from``) the history
        and last measurement a checkpoint brought are dropped; on a resume
        the rows after the resumed iteration are.

        Args:
            runner (Runner): The runner of the training process.
        """
        model = _unwrap(runner.model)
        optimizer = (
            runner.optim_wrapper.optimizer
            if hasattr(runner.optim_wrapper, 'optimizer') else {
                k: w.optimizer
                for k, w in runner.optim_wrapper.items()
            })
        problems = psbn_decay_problems(model, optimizer)
        for kind, note in psbn_decay_notes(model, optimizer):
            log = (
                runner.logger.info
                if kind in ('sgd', 'decoupled') else runner.logger.warning)
            log(f'CollapseMonitorHook: psBN under {note} '
                '(docs/optimizers.md)')
        if problems['no_decay']:
            runner.logger.warning(
                f'CollapseMonitorHook: {len(problems["no_decay"])} psBN '
                f'layers get no weight decay (e.g. '
                f'{", ".join(problems["no_decay"][:3])}): psBN revives dead '
                'channels only through weight decay. Check '
                'optim_wrapper.paramwise_cfg (norm_decay_mult=0?) and '
                'optimizer.weight_decay.')
        if problems['frozen']:
            runner.logger.info(
                f'CollapseMonitorHook: {len(problems["frozen"])} psBN layers '
                'are frozen (requires_grad=False, e.g. frozen_stages), so '
                'they neither collapse nor recover: '
                f'{", ".join(problems["frozen"][:3])}...')
        if runner.iter == 0:
            # A fresh start (also with load_from): the history of the run a
            # checkpoint came from is not this run's; its last measurement
            # is replaced by the loaded weights' own.
            self._history = []
            self._last = None
        else:
            self._history = [
                r for r in self._history if r['iter'] <= runner.iter
            ]
        if self._last is None:
            self._measure(runner, runner.iter)
            self._start_pending = True
        if self.activation:
            # On every norm layer for the whole run, switched on in measured
            # iterations only: a train_step that torch.compile compiles at
            # its first call (Runner's compile=True) sees hooks that exist
            # then, never ones added later.
            if self._probe is not None:
                self._probe.detach()
            model = _unwrap(runner.model)
            self._probe = ActivationProbe(
                model, [name for name, _, _ in norm_layers(model)])
            self._probe.enabled = False
            self._probe.attach()

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        """Switch the activation probe on if this iteration will be measured
        (or is the run's first: its forward sees the weights of the start-of-
        training measurement).

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the batch in the epoch.
            data_batch (dict or tuple or list, optional): The batch.
        """
        if self._probe is None:
            return
        if (self._start_pending
                or self.every_n_train_iters(runner, self.interval)
                or self._ends_epoch(runner, batch_idx)):
            self._probe.reset()
            self._probe.enabled = True

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """Read the probe out, read the graph once (at the first
        iteration: rectified layers and FLOPs) and measure every
        ``interval`` iterations.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the batch in the epoch.
            data_batch (dict or tuple or list, optional): The batch (its
                first image feeds the graph pass).
            outputs (dict, optional): The outputs of the train step.
        """
        if self._probe is not None and self._probe.enabled:
            self._probe.enabled = False
            inactive = self._probe.inactive
            if self._flops_map is not None:
                # Before the graph is read (the first iteration) every norm
                # layer; then only those the measure covers.
                covered = set(self._flops_map.rectified_layers)
                inactive = {n: m for n, m in inactive.items() if n in covered}
            if self._start_pending:
                # The first iteration's forward ran on the weights of the
                # start-of-training measurement.
                self._last.attach_inactive(inactive)
                self._refresh_last_row()
            self._inactive = (runner.iter + 1, inactive)
        self._start_pending = False
        if self._flops_map is None and not self._flops_failed:
            self._build_flops_map(runner, data_batch)
        if self.every_n_train_iters(runner, self.interval):
            self._measure(runner, runner.iter + 1)

    def _ends_epoch(self, runner, batch_idx: int) -> bool:
        loop = getattr(runner, 'train_loop', None)
        dataloader = getattr(loop, 'dataloader', None)
        if dataloader is None or not hasattr(loop, 'max_epochs'):
            return False
        try:
            return self.end_of_epoch(dataloader, batch_idx)
        except TypeError:  # a dataloader without len()
            return False

    def after_train_epoch(self, runner) -> None:
        """Measure at the end of every epoch (once if it ends on an interval).

        Args:
            runner (Runner): The runner of the training process.
        """
        self._measure(runner, runner.iter)

    def after_train(self, runner) -> None:
        """Write the report and the plots (:meth:`write_report`).

        Args:
            runner (Runner): The runner of the training process.
        """
        if self._probe is not None:
            self._probe.detach()
            self._probe = None
        self.write_report(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Save the last measurement and the history in the checkpoint
        (``checkpoint['collapse_monitor']``, tensors and plain types only, so
        safe loading reads it).

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The checkpoint about to be saved, updated in
                place.
        """
        checkpoint[STATE_KEY] = dict(
            last=self._last.state() if self._last is not None else None,
            history=[dict(r) for r in self._history])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore what :meth:`before_save_checkpoint` saved, so that
        transitions continue across ``--resume``; a checkpoint without it
        changes nothing.

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The loaded checkpoint.
        """
        state = checkpoint.get(STATE_KEY)
        if not state:
            return
        self._last = CollapseStats.from_state(
            state['last']) if state.get('last') else None
        self._history = [dict(r) for r in state.get('history', [])]

    # ------------------------------------------------------------ work
    def _build_flops_map(self, runner, data_batch) -> None:
        model = _unwrap(runner.model)
        try:
            if hasattr(model, 'data_preprocessor') and isinstance(
                    data_batch, dict):
                inputs = model.data_preprocessor(data_batch, False)['inputs']
            else:
                inputs = data_batch['inputs'] if isinstance(
                    data_batch, dict) else data_batch
            self._flops_map = channel_flops(model, inputs[:1])
        except Exception as e:  # a model the generic pass cannot run
            self._flops_failed = True
            runner.logger.warning(
                'CollapseMonitorHook: FLOPs sparsity is not available for '
                f'this model ({type(e).__name__}: {e}); the other measures '
                'are')
            return
        # The start-of-training measurement had no graph yet.
        if self._last is not None and self._history:
            self._attach_graph(self._last)
            self._refresh_last_row()

    def _attach_graph(self, stats: CollapseStats) -> None:
        """Rectified layers (and, with ``flops``, FLOPs) from the graph."""
        if self.flops:
            attach_flops(stats, self._flops_map)
        else:
            attach_rectified(stats, self._flops_map)

    def _refresh_last_row(self) -> None:
        """Recompute the last history row from ``self._last`` after the graph
        or a probe was attached to it (its transitions stay)."""
        row = self._history[-1] if self._history else None
        if row is None or row['iter'] != self._last.meta.get('iter'):
            return
        row.update(
            (k, v) for k, v in self._last.summary().items() if k != 'channels')

    def _measure(self, runner, it: int) -> None:
        if self._history and self._history[-1]['iter'] == it:
            return  # the epoch end falls on an interval
        model = _unwrap(runner.model)
        known = set()
        if self.zero_init_layers is not None:
            known.update(name for name, _, _ in norm_layers(model)
                         if self.zero_init_layers.search(name))
        stats = measure_model(
            model,
            self.gamma_thr,
            self.prob_thr,
            zero_init_layers=known,
            previous=self._last)
        stats.meta.update(iter=it, epoch=runner.epoch)
        if self._flops_map is not None:
            self._attach_graph(stats)
        if self._inactive is not None and self._inactive[0] == it:
            stats.attach_inactive(self._inactive[1])
        summary = stats.summary()
        if self._last is not None:
            trans = stats.transitions(self._last)
        else:
            trans = dict(entered_dead=0, recovered=0)

        hub = runner.message_hub
        for key in ('collapsed', 'dead', 'inactive', 'sparsity', 'zero_init',
                    'diverged'):
            if key in summary:
                hub.update_scalar(f'train/collapse/{key}', summary[key])
        if summary['diverged'] > 0 and not self._warned_diverged:
            self._warned_diverged = True
            layers = [r['name'] for r in stats.per_layer() if r['diverged']]
            runner.logger.warning(
                f'CollapseMonitorHook: the run diverged: '
                f'{100 * summary["diverged"]:.1f} % of the channels (in '
                f'{len(layers)} layers, e.g. {", ".join(layers[:3])}) have '
                f'NaN or inf gamma or beta at iteration {it}. That is not '
                'filter collapse; they are left out of the collapsed and '
                'dead shares (lower the lr, clip gradients, or resume from '
                'an earlier checkpoint).')
        for key, value in trans.items():
            hub.update_scalar(f'train/collapse/{key}', value)
        if self.by_stage:
            for stage, shares in stats.by_stage().items():
                for key, value in shares.items():
                    hub.update_scalar(f'train/collapse/{stage}/{key}', value)

        if self._history:
            before = self._history[-1]['dead']
            if summary['dead'] - before > self.jump_thr:
                runner.logger.warning(
                    f'CollapseMonitorHook: the dead share jumped from '
                    f'{100 * before:.1f} % to {100 * summary["dead"]:.1f} % '
                    f'(iteration {self._history[-1]["iter"]} -> {it}, '
                    f'{trans["entered_dead"]} channels entered the dead '
                    'region), as after a large or suddenly raised learning '
                    'rate; psBN lets such channels recover.')
        self._history.append(
            dict(
                iter=it,
                epoch=runner.epoch,
                **{
                    k: v
                    for k, v in summary.items() if k != 'channels'
                },
                **trans))
        self._last = stats

    def report(self) -> dict:
        """The JSON report of the last measurement and the history.

        Returns:
            dict: ``definitions`` (of the measures, with the thresholds),
            ``summary``, ``by_stage`` and ``layers`` (the last measurement;
            None and ``[]`` before any), ``history`` (one row per
            measurement) and ``flops_links`` (the producer and consumer
            convs of each norm layer; None before the graph is read).
        """
        stats = self._last
        return dict(
            definitions=dict(
                collapsed=f'|gamma| < {self.gamma_thr:g}',
                dead=f'P(y > 0) = Phi((beta + alpha) / |gamma|) < '
                f'{self.prob_thr:g}, over the rectified channels only (the '
                'output goes into a ReLU/LeakyReLU first, read from the '
                'graph; dead_rule "all" where the graph was not known)',
                inactive='rectified channels whose output was <= 0 at '
                'every position of every image of the measured '
                "iteration's training batch",
                sparsity='share of conv FLOPs (multiply-adds) removed by '
                'collapsed channels: producer conv output channel + consumer '
                'conv input channels reached through channel-wise ops only '
                '(not through residual additions), each conv (input, output) '
                'pair once',
                zero_init='layers whose every gamma is exactly 0 (by design, '
                'e.g. zero_init_residual) or named by zero_init_layers, left '
                'out of the shares while below the threshold',
                diverged='channels whose gamma or beta + alpha is NaN or '
                'inf (a diverged run, not collapse), a share of all '
                'channels, left out of the other shares'),
            summary=stats.summary() if stats else None,
            by_stage=stats.by_stage() if stats else None,
            layers=stats.per_layer() if stats else [],
            history=self._history,
            flops_links=self._flops_map.links
            if self._flops_map is not None else None)

    @master_only
    def write_report(self, runner) -> None:
        """Write ``report.json`` (:meth:`report`) and the plots
        ``gamma_hist.png``, ``gamma_beta.png`` and, after two measurements,
        ``history.png`` to ``<work_dir>/<out_dir>``, and log the summary. Rank
        0 only; nothing before the first measurement.

        Args:
            runner (Runner): The runner of the training process.
        """
        if self._last is None:
            return
        # Imported here, not when mmdet_psbn is: matplotlib (the plots)
        # and the tools' utilities (the JSON writer).
        from mmdet_psbn.analysis.plots import (plot_gamma_beta,
                                               plot_gamma_hist, plot_history)
        from mmdet_psbn.utils.io import dump_json
        out = osp.join(runner.work_dir, self.out_dir)
        report = self.report()
        dump_json(report, osp.join(out, 'report.json'))
        name = osp.basename(runner.work_dir.rstrip('/')) or 'model'
        plot_gamma_hist([self._last], [name], osp.join(out, 'gamma_hist.png'))
        plot_gamma_beta(self._last, name, osp.join(out, 'gamma_beta.png'))
        if len(self._history) > 1:
            plot_history(self._history, 'iter', osp.join(out, 'history.png'))
        summary = report['summary']
        runner.logger.info(
            f'CollapseMonitorHook: collapsed {100 * summary["collapsed"]:.2f}'
            f' %, dead {100 * summary["dead"]:.2f} % of '
            f'{int(summary["rectified_channels"])} rectified channels' +
            (f', inactive {100 * summary["inactive"]:.2f} %' if 'inactive' in
             summary else '') +
            (f', FLOPs sparsity {100 * summary["sparsity"]:.2f} %'
             if 'sparsity' in summary else '') +
            (f', DIVERGED {100 * summary["diverged"]:.2f} % (NaN/inf gamma '
             'or beta)' if summary.get('diverged') else '') +
            f'; report and plots in {out}')
