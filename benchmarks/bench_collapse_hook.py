# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""What CollapseMonitorHook costs per training iteration, on the toy RetinaNet.

    python benchmarks/bench_collapse_hook.py [--iters 40] [--repeat 3]
        [--interval 500] [--probe-interval 10] [--threads 2]

One process trains mmdet's RetinaNet-R50-FPN of
``configs/toy/retinanet_r50_fpn_toy.py`` on a generated toy COCO set with
mmengine's Runner, ``--iters`` iterations a run, in three variants that take
turns (so drift in machine load hits them alike):

- ``plain``: no collapse monitor;
- ``hook@500``: ``CollapseMonitorHook`` at its default ``--interval``;
- ``hook@10``: the hook measuring every ``--probe-interval`` iterations.

Inside the hook runs, the time spent in the hook's own calls is clocked:
``before_train_iter`` and ``after_train_iter`` on iterations that do not
measure (the per-iteration check), and on measured iterations everything
the hook adds: ``before_train_iter`` (the activation probe switched on),
the probe's forward hooks themselves (one reduction per norm layer, inside
the training forward) and ``after_train_iter`` (the probe's read-out and
the measurement). The probe's hooks stay attached, switched off, on the
other iterations: their calls count in the per-iteration check. The cost
per iteration at the default interval is then

    (check + one measured iteration's extra / interval) / plain iteration,

all three medians of this run; the iteration time includes data loading,
logging and every other hook. As a cross-check the script also prints the
end-to-end difference of the ``hook@500`` and ``plain`` loops and the spread
of the plain loops, i.e. how much of such a difference is noise. The clock
of a loop runs from the end of its first iteration to the end of its last,
so the one-off work (the first measurement, the FLOPs graph pass on the
first batch, the report and plots at the end) is left out and printed
apart. Every time is read on ``_timing.clock``.
"""
import argparse
import itertools
import os.path as osp
import statistics
import sys
import tempfile

import torch
from _timing import clock, time_call
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOY_CONFIG = osp.join(REPO, 'configs', 'toy', 'retinanet_r50_fpn_toy.py')
_RUNS = itertools.count()


class _Clock(Hook):
    """Wall time at the end of every training iteration, after all other hooks
    (``LOWEST``)."""
    priority = 'LOWEST'

    def __init__(self):
        self.stamps = []

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.stamps.append(clock())


def _time_probe_hooks(log):
    """Clock every call of the activation probe's forward hooks: on (measured
    iterations; ``log['forwards']`` counts them by the probe's ``reset``) and
    off (attached for the whole run, returning at once; ``log['off_forwards']``
    counts forwards, one per hooked layer call)."""
    from mmdet_psbn.analysis.collapse import ActivationProbe
    make, reset = ActivationProbe._make_hook, ActivationProbe.reset

    def counted_reset(self):
        log['forwards'] += 1  # the monitor resets it before each probe
        return reset(self)

    def timed_make(self, name):
        hook = make(self, name)
        layers = len(self._modules)

        def timed(*args):
            on = self.enabled
            start = clock()
            try:
                return hook(*args)
            finally:
                if on:
                    log['seconds'] += clock() - start
                else:
                    log['off_seconds'] += clock() - start
                    log['off_forwards'] += 1 / layers

        return timed

    ActivationProbe._make_hook = timed_make
    ActivationProbe.reset = counted_reset


def _time_calls(hook, names, log):
    """Wrap ``hook.<name>`` so each call appends (name, runner.iter, seconds)
    to ``log``."""
    for name in names:
        fn = getattr(hook, name)

        def timed(runner, *args, _fn=fn, _name=name, **kwargs):
            start = clock()
            try:
                return _fn(runner, *args, **kwargs)
            finally:
                log.append((_name, runner.iter, clock() - start))

        setattr(hook, name, timed)


def _config(data_root: str, work_dir: str, iters: int, interval):
    cfg = Config.fromfile(TOY_CONFIG)
    cfg.work_dir = work_dir
    # one visualizer and message hub per run (mmengine keeps them by name)
    cfg.experiment_name = f'bench_collapse_hook_{next(_RUNS)}'
    cfg.visualizer.name = cfg.experiment_name
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 20
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.log_processor = dict(by_epoch=False)
    cfg.randomness = dict(seed=0)
    cfg.log_level = 'WARNING'
    cfg.custom_hooks = [] if interval is None else [
        dict(type='CollapseMonitorHook', interval=interval)
    ]
    return cfg


def _run(data_root, iters, interval):
    """Loop seconds after the first iteration, train() seconds, and the hook's
    clocked calls."""
    from mmdet_psbn.engine.hooks import CollapseMonitorHook
    calls = []
    with tempfile.TemporaryDirectory() as work_dir:
        runner = Runner.from_cfg(_config(data_root, work_dir, iters, interval))
        for hook in runner.hooks:
            if isinstance(hook, CollapseMonitorHook):
                _time_calls(
                    hook,
                    ('before_train_iter', 'after_train_iter', '_measure'),
                    calls)
        iter_ends = _Clock()
        runner.register_hook(iter_ends)
        total, _ = time_call(runner.train)
    return iter_ends.stamps[-1] - iter_ends.stamps[0], total, calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=40)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument(
        '--interval',
        type=int,
        default=500,
        help="the hook's interval to report (its default)")
    parser.add_argument(
        '--probe-interval',
        type=int,
        default=10,
        help='the interval whose runs time a measurement')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    if min(args.repeat, args.threads, args.interval, args.probe_interval) < 1:
        parser.error('--repeat, --threads and the intervals must be >= 1')
    if args.iters < 2 * args.probe_interval:
        parser.error(f'--iters ({args.iters}) must be at least twice '
                     f'--probe-interval ({args.probe_interval})')
    torch.set_num_threads(args.threads)

    import mmdet_psbn  # noqa: F401  registers the hook
    from mmdet_psbn.datasets import make_toy_coco

    plain_name, hook_name, probe_name = ('plain', f'hook@{args.interval}',
                                         f'hook@{args.probe_interval}')
    variants = {
        plain_name: None,
        hook_name: args.interval,
        probe_name: args.probe_interval
    }
    loop = {k: [] for k in variants}
    total = {k: [] for k in variants}
    checks, measures = [], []
    probe_calls = dict(
        forwards=0, seconds=0.0, off_forwards=0.0, off_seconds=0.0)
    _time_probe_hooks(probe_calls)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = osp.join(tmp, 'toy_coco') + '/'
        make_toy_coco(data_root, num_train=64, num_val=8)
        _run(data_root, 4, None)  # warm-up: imports, allocator, caches
        for _ in range(args.repeat):
            for name, interval in variants.items():
                t_loop, t_total, calls = _run(data_root, args.iters, interval)
                loop[name].append(t_loop)
                total[name].append(t_total)
                measured = {it for n, it, _ in calls if n == '_measure'}
                # inside the loop's window: iterations 1 .. iters-1
                per_iter = {}
                for n, it, dt in calls:
                    if n != '_measure' and 1 <= it < args.iters:
                        per_iter[it] = per_iter.get(it, 0.0) + dt
                checks += [
                    dt for it, dt in per_iter.items() if it not in measured
                ]
                measures += [
                    dt for it, dt in per_iter.items() if it in measured
                ]
                print(
                    f'  {name:10s} loop {t_loop:7.2f} s  train() '
                    f'{t_total:7.2f} s',
                    flush=True)

    n = args.iters - 1  # iterations inside a loop's window
    med = {k: statistics.median(v) for k, v in loop.items()}
    t_iter = med[plain_name] / n
    # the hook's calls, and its probe's switched-off forward hooks
    probe_off = probe_calls['off_seconds'] / max(probe_calls['off_forwards'],
                                                 1)
    check = statistics.median(checks) + probe_off
    # the probe's forward hooks, per probed forward
    probe = probe_calls['seconds'] / max(probe_calls['forwards'], 1)
    one = statistics.median(measures) + probe
    cost = (check + one / args.interval) / t_iter
    end_to_end = (med[hook_name] - med[plain_name]) / med[plain_name]
    noise = (max(loop[plain_name]) - min(loop[plain_name])) / med[plain_name]
    one_off = (statistics.median(total[hook_name]) - med[hook_name]) - (
        statistics.median(total[plain_name]) - med[plain_name])
    print(f'\ndevice=cpu threads={torch.get_num_threads()} '
          f'torch={torch.__version__} iters={args.iters} '
          f'repeat={args.repeat} (medians)')
    for name, v in loop.items():
        print(f'{name:10s} {1e3 * statistics.median(v) / n:8.1f} ms/iter '
              f'(min {1e3 * min(v) / n:.1f}, max {1e3 * max(v) / n:.1f})')
    print(f'per-iteration check: {1e6 * check:.1f} us '
          f'({len(checks)} calls; of it the switched-off probe hooks '
          f'{1e6 * probe_off:.1f} us)')
    print(f'one measured iteration, extra: {1e3 * one:.1f} ms '
          f'({len(measures)} measured iterations; of it the probe\'s '
          f'forward hooks {1e3 * probe:.2f} ms) = {one / t_iter:.3f} plain '
          'iterations')
    print(f'one-off per run (first measurement, FLOPs pass, report and '
          f'plots): {one_off:+.2f} s')
    print(f'end to end, {hook_name} vs plain: {100 * end_to_end:+.2f} % '
          f'(spread of the plain loops: {100 * noise:.2f} %)')
    print(f'cost per iteration at interval {args.interval}: '
          f'{100 * cost:.4f} % (target <= 1 %)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
