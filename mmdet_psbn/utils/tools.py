# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""What the tools share.

``tools/train.py`` and ``tools/test.py`` follow mmdet 3.x's; the difference
is that every user input is checked before the Runner is built (see
:mod:`mmdet_psbn.utils.checks`), and that a ``--launcher pytorch`` run also
works without CUDA (see :mod:`mmdet_psbn.compat`). Every tool reports a
user error the one way of :func:`run_tool`.
"""
import argparse
import os
import os.path as osp
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Type

from mmengine.config import Config, DictAction

from .checks import DataError, InputError, check_cfg_options, check_config_path

__all__ = [
    'EXIT_INPUT_ERROR', 'add_common_args', 'build_runner', 'load_config',
    'parse_args', 'run_tool', 'user_errors'
]

#: The exit status of every tool on bad input (argparse's, too).
EXIT_INPUT_ERROR = 2


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs; '
        'e.g. train_dataloader.batch_size=4 "model.backbone.norm_cfg.type='
        'psBN". A key that looks like a typo of an existing one is refused.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank (older); both are accepted.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args(parser: argparse.ArgumentParser,
               argv: Optional[list] = None) -> argparse.Namespace:
    """Add the common options to ``parser``, parse, and export ``LOCAL_RANK``
    for launchers that pass it as an option only."""
    add_common_args(parser)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args: argparse.Namespace) -> Config:
    """Read ``args.config``, merge ``--cfg-options`` and set the work dir as
    mmdet does (``./work_dirs/<config name>`` by default)."""
    cfg = Config.fromfile(check_config_path(args.config))
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config):
    """Build the Runner the config asks for (``runner_type``), as mmdet's tools
    do.

    Its model loads a psBN checkpoint into plain BN layers (a BN config)
    with alpha folded into the bias, instead of mmengine's "unexpected key"
    and outputs off by alpha
    (:func:`~mmdet_psbn.models.layers.fold_psbn_entries_on_load`).
    """
    from mmengine.model import is_model_wrapper
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmdet_psbn.compat import setup_cpu_distributed
    from mmdet_psbn.models.layers import fold_psbn_entries_on_load
    setup_cpu_distributed(cfg, cfg.launcher)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    model = runner.model
    fold_psbn_entries_on_load(
        model.module if is_model_wrapper(model) else model)
    return runner


def run_tool(main: Callable[[Optional[list]], Any],
             argv: Optional[list] = None,
             prog: Optional[str] = None) -> None:
    """Run a tool's ``main(argv)``; an :class:`InputError` (or a dataset's
    :class:`DataError`) ends it with ``<prog>: error: <message>`` on stderr and
    exit status 2 instead of a traceback (the shape and status of argparse's
    usage errors).

    Args:
        main (callable): The tool's ``main``; what it returns is ignored.
        argv (list, optional): The arguments; None reads ``sys.argv``.
        prog (str, optional): The name in the message. Defaults to the
            script's file name (argparse's default ``prog``).
    """
    try:
        main(argv)
    except (InputError, DataError) as e:
        prog = prog or osp.basename(sys.argv[0]) or 'mmdet_psbn'
        print(f'{prog}: error: {e}', file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)


@contextmanager
def user_errors(*types: Type[BaseException]) -> Iterator[None]:
    """Turn the errors a tool knows to be the user's into :class:`InputError`,
    message unchanged.

    A tool wraps the library calls whose documented errors are about its
    input, e.g. ``with user_errors(ValueError, FileExistsError):
    make_toy_coco(...)``; anything else still ends in a traceback.
    """
    try:
        yield
    except types as e:
        raise InputError(str(e)) from e
