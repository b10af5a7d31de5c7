# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""How the benchmarks time code, in one place.

Every figure a benchmark prints comes from :func:`interleaved` (callables
taking turns) or :func:`time_call` (one call), read on one clock,
:func:`clock`: torch.utils.benchmark's timer, which synchronises the
accelerator before it reads ``timeit.default_timer``, so asynchronous
CUDA work is counted where it runs. The benchmarks compare variants
within one run (ratios carry over between machines, absolute times do
not), so the variants take turns and drift in machine load hits them
alike.

``torch.utils.benchmark.Timer`` itself is not used: its ``timeit`` and
``blocked_autorange`` run warm-up calls before every measurement, which a
benchmark that times whole epochs or training runs cannot afford, and it
measures one statement at a time, not in turns.

Import it from a benchmark run as a script (``python benchmarks/x.py``
puts this folder on ``sys.path``): ``from _timing import interleaved``.
"""
import statistics
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from torch.utils.benchmark.utils.timer import timer as clock

__all__ = ['clock', 'interleaved', 'medians', 'time_call']


def time_call(fn: Callable[[], Any]) -> Tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``, on :func:`clock`."""
    start = clock()
    result = fn()
    return clock() - start, result


def interleaved(fns: Mapping[str, Callable[[], Any]],
                repeat: int,
                warmup: int = 1) -> Dict[str, List[float]]:
    """Seconds of ``repeat`` calls of each callable, the callables taking
    turns: ``{name: [seconds, ...]}``.

    Each callable is first called ``warmup`` times (lazy initialisation,
    allocator, caches), untimed.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(time_call(fn)[0])
    return times


def medians(times: Mapping[str, Sequence[float]]) -> Dict[str, float]:
    """The median of each list of :func:`interleaved`."""
    return {name: statistics.median(t) for name, t in times.items()}
