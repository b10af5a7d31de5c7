# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The upstream bugs that :mod:`mmdet_psbn.compat` works around, each shown on
the upstream code alone, then fixed.

If a ``test_upstream_*`` test starts failing after an upgrade, upstream has
fixed the bug: delete the matching fix in compat.py and its tests.
"""
import copy
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.testing import RunnerTestCase

from mmdet_psbn import compat
from .conftest import free_port


class TestSafeResume(RunnerTestCase):
    """An mmengine checkpoint written by a real Runner."""

    def _train_and_checkpoint(self):
        cfg = copy.deepcopy(self.epoch_based_cfg)
        cfg.train_cfg.max_epochs = 1
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        runner = self.build_runner(cfg)
        runner.train()
        return os.path.join(runner.work_dir, 'epoch_1.pth'), cfg

    def test_upstream_bug_and_fix(self):
        ckpt, cfg = self._train_and_checkpoint()
        saved = torch.serialization.get_safe_globals()
        torch.serialization.clear_safe_globals()
        try:
            # Upstream: torch's default weights_only=True refuses mmengine's
            # own MessageHub state.
            with self.assertRaisesRegex(pickle.UnpicklingError,
                                        'HistoryBuffer'):
                torch.load(ckpt, map_location='cpu')
            compat.register_safe_globals()
            torch.load(ckpt, map_location='cpu')
        finally:
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals(saved)
        # And the Runner's resume path itself works.
        cfg.train_cfg.max_epochs = 2
        cfg.resume = True
        cfg.load_from = ckpt
        cfg.experiment_name = 'resumed'
        runner = self.build_runner(cfg)
        runner.train()
        self.assertEqual(runner.epoch, 2)


def test_allow_list_is_not_switched_off(tmp_path):
    """Only the listed globals are allowed: anything else still refuses."""
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': Config(dict(a=1))}, path)
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        torch.load(path)
    allowed = {}
    for g in compat.MMENGINE_CHECKPOINT_GLOBALS:
        obj, name = g if isinstance(
            g, tuple) else (g, f'{g.__module__}.{g.__name__}')
        allowed[name] = obj
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in allowed
    # The one builtin name is bound to a restricted stand-in.
    assert allowed.pop('builtins.getattr') is not getattr
    assert allowed.pop('builtins.bytes') is bytes  # immutable, harmless
    assert not any(
        n.startswith(('builtins.', 'os.', 'subprocess.')) for n in allowed)


def test_import_adds_exactly_the_listed_globals():
    """The allow-list is what ``import mmdet_psbn`` changes in torch's safe
    loading (docs/upstream.md): no more, no less.

    (torch registers its own
    DTensor classes when ``torch.distributed.tensor`` is first imported.)
    """
    proc = _run_python("""
        import torch
        before = list(torch.serialization.get_safe_globals())
        import mmdet_psbn
        from mmdet_psbn.compat import MMENGINE_CHECKPOINT_GLOBALS as listed
        added = [g for g in torch.serialization.get_safe_globals()
                 if g not in before]
        ours = [g for g in added if not getattr(
            g[0] if isinstance(g, tuple) else g, '__module__',
            '').startswith('torch.')]
        assert len(ours) == len(listed), ours
        assert all(g in listed for g in ours), ours
        print('OK')
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'OK'


def test_empty_history_buffer_loads(tmp_path):
    from mmengine.logging import HistoryBuffer
    path = tmp_path / 'hub.pth'
    torch.save({'log_scalars': {'train/x': HistoryBuffer()}}, path)
    assert len(torch.load(path)['log_scalars']['train/x'].data[0]) == 0


class _GetattrOf:
    """Pickles as ``getattr(target, name)``, as a crafted checkpoint could."""

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


def test_getattr_is_restricted_to_history_buffer_methods(tmp_path):
    from mmengine.logging import HistoryBuffer
    good, bad = tmp_path / 'good.pth', tmp_path / 'bad.pth'
    torch.save({'m': _GetattrOf(HistoryBuffer, 'mean')}, good)
    assert torch.load(good)['m'] is HistoryBuffer.mean
    for target, name in ((HistoryBuffer, '__init__'),
                         (HistoryBuffer, '__class__'), (torch.Tensor, 'add')):
        torch.save({'m': _GetattrOf(target, name)}, bad)
        with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
            torch.load(bad)


def _run_python(code, env=None):
    full_env = dict(
        os.environ,
        RANK='0',
        WORLD_SIZE='1',
        LOCAL_RANK='0',
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(free_port()))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason='the bug is CPU-only')
def test_upstream_init_dist_needs_cuda():
    proc = _run_python("""
        from mmengine.dist import init_dist
        init_dist('pytorch', backend='gloo')
        """)
    assert proc.returncode != 0
    assert 'CUDA' in proc.stderr or 'cuda' in proc.stderr, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='the bug is CPU-only')
def test_upstream_ddp_device_ids_rejected_on_cpu():
    proc = _run_python("""
        import torch
        torch.distributed.init_process_group('gloo')
        from mmengine.model import MMDistributedDataParallel
        MMDistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0])
        """)
    assert proc.returncode != 0
    assert 'device_ids' in proc.stderr, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix is CPU-only')
def test_setup_cpu_distributed_fixes_both():
    proc = _run_python("""
        import torch
        from mmengine.config import Config
        from mmengine.registry import MODEL_WRAPPERS
        from mmdet_psbn.compat import setup_cpu_distributed
        cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
        assert setup_cpu_distributed(cfg, 'pytorch')
        assert torch.distributed.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg.device_ids is None
        # What Runner.wrap_model then builds:
        MODEL_WRAPPERS.build(cfg.model_wrapper_cfg, default_args=dict(
            module=torch.nn.Linear(2, 2), device_ids=[0]))
        print('OK')
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'OK'


def test_setup_cpu_distributed_leaves_other_runs_alone():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert compat.setup_cpu_distributed(cfg, 'none') is False
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert 'model_wrapper_cfg' not in cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only message')
def test_setup_cpu_distributed_refuses_slurm_without_cuda():
    with pytest.raises(RuntimeError, match='--launcher slurm needs CUDA'):
        compat.setup_cpu_distributed(Config(dict()), 'slurm')
