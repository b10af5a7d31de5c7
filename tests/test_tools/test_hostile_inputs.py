# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The hostile-input corpus (``hostile_corpus.py``), every case its own test.

For a tool case: exit status 2, stderr exactly one line
``<tool>.py: error: ...`` that names the problem (the case's fragments)
and a fix, no traceback, nothing created or changed under the case's
folder (so no work dir, no output, no half-written file) and no shared
input changed, and no code from a hostile pickle run. The tools run
in-process (``run_tool(main, argv)``: a few milliseconds, or the config
load); :func:`test_cli_sample` runs a sample as real processes, with and
without ``--debug``. For a constructor case: the documented exception,
naming the argument and the bad value.
"""
import hashlib
import os
import os.path as osp
import runpy
import subprocess
import sys
import warnings

import pytest

from ..conftest import TOOLS
from .hostile_corpus import (CTOR_CASES, MARKER, NUM_CASES, TOOL_CASES,
                             make_assets)

#: Words one of which every message has: the hint of the fix.
FIX_WORDS = ('give', 'pass', 'use', 'put', 'replace', 'point', 'fix', 'make',
             'e.g.', 'did you mean', 'drop', 'delete', 'save', 'must', 'fold',
             'train with', 'regenerate', 'lower', 'retry', 'pin', 'check',
             'install', 'resume')


def test_corpus_size():
    """The count docs/errors.md and the README quote."""
    print(f'hostile inputs: {NUM_CASES} ({len(TOOL_CASES)} tool runs, '
          f'{len(CTOR_CASES)} constructor calls)')
    assert NUM_CASES >= 300
    # docs/errors.md quotes the count: keep it in step.
    with open(osp.join(TOOLS, '..', 'docs', 'errors.md')) as f:
        assert f'**{NUM_CASES} hostile inputs**: {len(TOOL_CASES)} tool' \
            in ' '.join(f.read().split())
    # So does the README's "What we promise".
    with open(osp.join(TOOLS, '..', 'README.md')) as f:
        assert f'({NUM_CASES} generated cases' in f.read()
    assert len({c.id for c in TOOL_CASES}) == len(TOOL_CASES)
    assert len({c.id for c in CTOR_CASES}) == len(CTOR_CASES)


@pytest.fixture(scope='module')
def assets(toy_coco, tmp_path_factory):
    return make_assets(
        str(tmp_path_factory.mktemp('hostile_assets')), toy_coco)


_TOOLS = {}


def _tool(name):
    if name not in _TOOLS:
        _TOOLS[name] = runpy.run_path(
            osp.join(TOOLS, name + '.py'), run_name='hostile_' + name)
    return _TOOLS[name]


def _tree(path):
    """``{relative path: sha256 or 'dir' or 'link'}`` of everything under
    ``path``."""
    out = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            full = osp.join(folder, name)
            rel = osp.relpath(full, path)
            if osp.islink(full):
                out[rel] = 'link:' + os.readlink(full)
            elif osp.isdir(full):
                out[rel] = 'dir'
            else:
                with open(full, 'rb') as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _stat_tree(path):
    """Sizes and modification times under ``path`` (the shared assets)."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.lstat(osp.join(folder, name))
            out[osp.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _argv(case, assets, tmp):
    argv, fragments = case.make(assets, tmp)
    argv = [str(a) for a in argv]
    if case.work_dir:
        argv += ['--work-dir', osp.join(tmp, 'work', 'run')]
    if case.tool in ('train', 'test', 'ensemble_eval'):
        # A unique experiment name: the Runner's logger and visualizer are
        # per-name singletons within a process.
        argv += [
            '--cfg-options',
            'experiment_name=hostile_' + ''.join(c if c.isalnum() else '_'
                                                 for c in case.id)
        ]
    return argv, fragments


def _check_message(case, line, fragments):
    assert line.startswith(f'{case.prog}: error: '), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert any(w in line.lower() for w in FIX_WORDS), \
        f'no hint of a fix in: {line}'


@pytest.mark.parametrize('case', TOOL_CASES, ids=lambda c: c.id)
def test_tool_refuses(case, assets, tmp_path, capsys, monkeypatch):
    tmp = str(tmp_path / 'case')
    os.makedirs(tmp)
    argv, fragments = _argv(case, assets, tmp)
    before, shared = _tree(tmp), _stat_tree(assets.root)
    coco = _stat_tree(assets.coco)
    tool = _tool(case.tool)
    monkeypatch.chdir(tmp)  # anything written to the cwd is seen below
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(SystemExit) as exit_info:
            tool['run_tool'](tool['main'], argv, prog=case.prog)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    assert 'Traceback' not in err
    lines = err.splitlines()
    assert len(lines) == 1, err[-3000:]
    _check_message(case, lines[0], fragments)
    assert not osp.lexists(osp.join(tmp, MARKER)), 'a pickle ran code'
    assert _tree(tmp) == before, 'something was created or changed'
    assert _stat_tree(assets.root) == shared
    assert _stat_tree(assets.coco) == coco


@pytest.mark.parametrize('case', CTOR_CASES, ids=lambda c: c.id)
def test_constructor_refuses(case):
    with pytest.raises(case.error) as info:
        case.call()
    for fragment in case.fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


# ------------------------------------------------- as real processes (CLI)
#: Cases run again as real processes (each costs the imports, ~5 s): the
#: checkpoint, pickle, config, data and model families.
CLI_SAMPLE = [
    'psbn2bn/ckpt-pickle-os_system-protocol2',
    'analyze_collapse/ckpt-symlink-loop',
    'train/config-key-optim_wraper',
    'train/data-train-image-random',
    'train/cifar-data_batch_1-evil-pickle',
    'test/model-wrong-shape',
]


def _run(argv, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run(
        [sys.executable] + argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600)


@pytest.mark.parametrize('case_id', CLI_SAMPLE)
def test_cli_sample(case_id, assets, tmp_path):
    """The real command line: exit 2, the one line last on stderr and no
    traceback (stderr may also hold the warnings of imports, not ours)."""
    case = next(c for c in TOOL_CASES if c.id == case_id)
    tmp = str(tmp_path / 'case')
    os.makedirs(tmp)
    argv, fragments = _argv(case, assets, tmp)
    before = _tree(tmp)
    proc = _run([osp.join(TOOLS, case.tool + '.py')] + argv, cwd=tmp)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = [
        line for line in proc.stderr.splitlines()
        if line.startswith(f'{case.prog}: error:')
    ]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0]
    _check_message(case, errors[0], fragments)
    assert not osp.lexists(osp.join(tmp, MARKER))
    assert _tree(tmp) == before


@pytest.mark.parametrize('case_id', ['psbn2bn/ckpt-truncated-0.5'])
def test_cli_debug_shows_the_traceback(case_id, assets, tmp_path):
    """``--debug``: the traceback of the input error, then the same line;
    the status is still 2 and nothing is left behind."""
    case = next(c for c in TOOL_CASES if c.id == case_id)
    tmp = str(tmp_path / 'case')
    os.makedirs(tmp)
    argv, fragments = _argv(case, assets, tmp)
    before = _tree(tmp)
    proc = _run(
        [osp.join(TOOLS, case.tool + '.py')] + argv + ['--debug'], cwd=tmp)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback (most recent call last)' in proc.stderr
    assert 'InputError' in proc.stderr
    _check_message(case, proc.stderr.splitlines()[-1], fragments)
    assert _tree(tmp) == before


def test_unexpected_error_keeps_its_traceback(tmp_path, capsys):
    """A bug (any exception but an input error) propagates: Python prints its
    traceback and exits with status 1."""
    from mmdet_psbn.utils.tools import run_tool

    def main(argv):
        raise RuntimeError('a bug')

    with pytest.raises(RuntimeError, match='a bug'):
        run_tool(main, [], prog='x.py')
    assert 'error:' not in capsys.readouterr().err


def test_work_dir_that_existed_is_kept(assets, tmp_path, capsys):
    """A work dir that existed before the run is never removed, even when the
    run fails on an input error after the Runner wrote its logs."""
    from .hostile_corpus import _cifar_cases
    make = dict((i, m) for i, m, _ in _cifar_cases())['data_batch_1-empty']
    root, _ = make(assets, str(tmp_path))
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'_base_ = {assets.cifar_cfg!r}\n'
                   f'train_dataloader = dict(dataset=dict(data_root='
                   f'{root!r}))\n')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'mine.txt').write_text('keep me')
    tool = _tool('train')
    with pytest.raises(SystemExit) as info:
        tool['run_tool'](
            tool['main'], [
                str(cfg), '--work-dir',
                str(work), '--cfg-options', 'experiment_name=hostile_kept'
            ],
            prog='train.py')
    assert info.value.code == 2
    assert 'is not a CIFAR-10 pickle' in capsys.readouterr().err
    assert (work / 'mine.txt').read_text() == 'keep me'


def test_debug_flag_in_every_tool_help(capsys):
    """Every Python tool documents --debug in its --help."""
    tools = [
        osp.join(d, f)[len(TOOLS) + 1:-3] for d in (TOOLS, TOOLS + '/misc')
        for f in sorted(os.listdir(d)) if f.endswith('.py')
    ]
    assert len(tools) == 10
    for name in tools:
        with pytest.raises(SystemExit) as info:
            _tool(name)['main'](['--help'])
        assert info.value.code == 0
        assert '--debug' in capsys.readouterr().out, name
