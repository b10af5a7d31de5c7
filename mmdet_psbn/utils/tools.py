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
import shutil
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Type

from mmengine.config import Config, DictAction

from .checks import (DataError, InputError, check_cfg_options,
                     check_config_keys, check_config_path, check_out_dir)

__all__ = [
    'EXIT_INPUT_ERROR', 'add_common_args', 'add_debug_arg', 'build_runner',
    'load_config', 'parse_args', 'run_tool', 'user_errors'
]

#: The exit status of every tool on bad input (argparse's, too).
EXIT_INPUT_ERROR = 2

#: The option of every tool that adds the traceback to an input error.
DEBUG_FLAG = '--debug'

#: Work dirs :func:`load_config` found absent in this run, with the first
#: folder of each path that existed: :func:`run_tool` removes what the run
#: created there if it ends on an input error.
_new_work_dirs: list = []


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (read by :func:`run_tool`) to a tool's parser."""
    parser.add_argument(
        DEBUG_FLAG,
        action='store_true',
        help='on an input error, print the Python traceback before the '
        'one-line message (the exit status stays 2)')


def add_common_args(parser: argparse.ArgumentParser) -> None:
    add_debug_arg(parser)
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
    cfg = _read_config(check_config_path(args.config))
    check_config_keys(cfg, args.config)
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    _remember_new_work_dir(check_out_dir(cfg.work_dir))
    return cfg


def _read_config(path: str) -> Config:
    """``Config.fromfile``, with the errors of a file that is not a config
    (Python syntax, a missing ``_base_``, an unknown ``mmdet::`` path) as
    :class:`InputError`."""
    import yaml
    try:
        return Config.fromfile(path)
    except (SyntaxError, OSError, ImportError, KeyError, NameError, ValueError,
            yaml.YAMLError) as e:  # JSONDecodeError too
        detail = ' '.join(str(e).split())[:300]
        raise InputError(
            f'config file {path!r} cannot be read ({type(e).__name__}: '
            f'{detail}): it must be an mmengine config (a .py, .json or '
            '.yaml file whose _base_ files exist)') from e


def _remember_new_work_dir(work_dir: str) -> None:
    """Note ``work_dir`` for :func:`_remove_new_work_dirs` if it does not exist
    yet, with the deepest of its folders that does."""
    if '://' in work_dir:
        return
    path = osp.abspath(work_dir)
    if osp.lexists(path):
        return
    existing = path
    while not osp.lexists(existing) and osp.dirname(existing) != existing:
        existing = osp.dirname(existing)
    _new_work_dirs.append((path, existing))


def _holds_checkpoint(path: str) -> bool:
    for _, _, files in os.walk(path):
        if any(f == 'last_checkpoint' or f.endswith('.pth') for f in files):
            return True
    return False


def _remove_new_work_dirs() -> None:
    """Remove the work dirs this run created (and the empty folders above them
    that it created), unless a checkpoint was saved there.

    A folder that existed before the run is never touched.
    """
    while _new_work_dirs:
        path, existing = _new_work_dirs.pop()
        if not osp.isdir(path) or osp.islink(path) or _holds_checkpoint(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        parent = osp.dirname(path)
        while parent != existing and parent.startswith(existing):
            try:
                os.rmdir(parent)  # only if empty
            except OSError:
                break
            parent = osp.dirname(parent)


def build_runner(cfg: Config, match_shapes: Optional[bool] = None):
    """Build the Runner the config asks for (``runner_type``), as mmdet's tools
    do.

    Its model loads a psBN checkpoint into plain BN layers (a BN config)
    with alpha folded into the bias, instead of mmengine's "unexpected key"
    and outputs off by alpha
    (:func:`~mmdet_psbn.models.layers.fold_psbn_entries_on_load`). The
    config's ``load_from`` is checked against the model
    (:func:`~mmdet_psbn.utils.io.check_state_dict`; shapes too if
    ``match_shapes``, by default when resuming) before anything runs.
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
    from mmdet_psbn.utils.io import check_state_dict
    model = runner.model
    model = model.module if is_model_wrapper(model) else model
    fold_psbn_entries_on_load(model)
    if cfg.get('load_from'):
        check_state_dict(
            cfg.load_from,
            model,
            match_shapes=bool(cfg.get('resume'))
            if match_shapes is None else match_shapes)
    return runner


def run_tool(main: Callable[[Optional[list]], Any],
             argv: Optional[list] = None,
             prog: Optional[str] = None) -> None:
    """Run a tool's ``main(argv)``; an :class:`InputError` (or a dataset's
    :class:`DataError`) ends it with ``<prog>: error: <message>`` on stderr and
    exit status 2 instead of a traceback (the shape and status of argparse's
    usage errors).

    The message is one line. With ``--debug`` among the arguments (every
    tool's parser accepts it, :func:`add_debug_arg`) the traceback is printed
    before it; the status is 2 all the same. A work dir that
    :func:`load_config` found absent is removed on such an error, unless a
    checkpoint was saved in it, so a refused run leaves nothing behind.
    Any other exception is a bug, not an input error: it ends in its
    traceback and Python's exit status 1, and its work dir (with the logs)
    is kept for the report. However it ends, the process group of a
    distributed run is destroyed.

    Args:
        main (callable): The tool's ``main``; what it returns is ignored.
        argv (list, optional): The arguments; None reads ``sys.argv``.
        prog (str, optional): The name in the message. Defaults to the
            script's file name (argparse's default ``prog``).
    """
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    debug = DEBUG_FLAG in (args[:args.index('--')] if '--' in args else args)
    del _new_work_dirs[:]
    try:
        main(argv)
    except (InputError, DataError) as e:
        _remove_new_work_dirs()
        if debug:
            traceback.print_exc()
        prog = prog or osp.basename(sys.argv[0]) or 'mmdet_psbn'
        message = ' '.join(str(e).split())
        print(f'{prog}: error: {message}', file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)
    finally:
        del _new_work_dirs[:]
        _end_process_group()


def _end_process_group() -> None:
    """Destroy the default process group, if the tool made one (``--launcher
    pytorch``), as torch asks of every program that does.

    mmengine's Runner leaves it alive. Then gloo's threads can outlive the
    interpreter's shutdown and abort a process whose work is done (SIGABRT,
    "terminate called without an active exception"), which torchrun reports as
    a failed run, and a batch script as a job to rerun.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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
