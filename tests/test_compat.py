# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The upstream bugs that :mod:`mmdet_psbn.compat` works around, each shown on
the upstream code alone, then fixed.

If a ``test_upstream_*`` test starts failing after an upgrade, upstream has
fixed the bug: delete the matching fix in compat.py and its tests.
"""
import copy
import os
import pickle
import signal
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


# --- fix 3: checkpoints a kill cannot break ---------------------------------
def _put_killed_midway(path, which):
    """A process writes a checkpoint over ``path`` with ``LocalBackend.put``
    (``which``: 'upstream' or 'fixed') and the kernel ends it halfway through
    the write (``SIGXFSZ`` at ``RLIMIT_FSIZE``), as a SIGKILL would."""
    return _run_python(f"""
        import io, resource, signal
        import torch
        import mmdet_psbn
        from mmengine.fileio.backends.local_backend import LocalBackend
        put = LocalBackend.put
        put = put.__wrapped__ if {which!r} == 'upstream' else put
        buffer = io.BytesIO()
        torch.save(dict(w=torch.arange(1e5)), buffer)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (buffer.tell() // 2,
                           resource.RLIM_INFINITY))
        put(LocalBackend(), buffer.getvalue(), {str(path)!r})
        """)


@pytest.mark.parametrize('which', ['upstream', 'fixed'])
def test_upstream_put_leaves_a_truncated_file(tmp_path, which):
    path = tmp_path / 'iter_4.pth'
    torch.save(dict(w=torch.zeros(3)), path)  # the previous save
    proc = _put_killed_midway(path, which)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr
    if which == 'upstream':
        # The checkpoint's own name holds half a file.
        assert not compat.is_complete_checkpoint(str(path))
        with pytest.raises(Exception):
            torch.load(path)
    else:
        # The old file, whole; the half-written one is a hidden temporary.
        assert torch.equal(torch.load(path)['w'], torch.zeros(3))
        left = [p.name for p in tmp_path.iterdir() if p.name != path.name]
        assert len(left) == 1 and left[0].startswith('.iter_4.pth.')
        assert left[0].endswith('.tmp')


def test_atomic_put_gives_the_mode_open_gives(tmp_path):
    from mmengine.fileio.backends.local_backend import LocalBackend
    LocalBackend().put(b'x', tmp_path / 'new.pth')
    with open(tmp_path / 'plain', 'wb'):
        pass
    assert (tmp_path / 'new.pth').read_bytes() == b'x'
    assert ((tmp_path / 'new.pth').stat().st_mode == (tmp_path /
                                                      'plain').stat().st_mode)


class _Interrupted(BaseException):
    """What a kill is to the code it stops: nothing after it runs."""


class TestCheckpointHookKill(RunnerTestCase):
    """A real Runner keeping one checkpoint (``max_keep_ckpts=1``) is
    interrupted while it saves its next one."""

    def _runner_with_one_checkpoint(self):
        cfg = copy.deepcopy(self.iter_based_cfg)
        cfg.train_cfg.max_iters = 2
        cfg.train_cfg.val_interval = 100
        cfg.default_hooks.checkpoint = dict(
            type='CheckpointHook',
            interval=2,
            by_epoch=False,
            max_keep_ckpts=1)
        runner = self.build_runner(cfg)
        runner.train()
        hook = next(
            h for h in runner.hooks if type(h).__name__ == 'CheckpointHook')
        old = os.path.join(runner.work_dir, 'iter_2.pth')
        self.assertTrue(compat.is_complete_checkpoint(old))

        def killed(*args, **kwargs):
            raise _Interrupted

        runner.save_checkpoint = killed
        return runner, hook, old

    def _last_checkpoint(self, runner):
        with open(os.path.join(runner.work_dir, 'last_checkpoint')) as f:
            return f.read()

    def test_upstream_checkpoint_hook_removes_before_saving(self):
        from mmengine.hooks import CheckpointHook
        runner, hook, old = self._runner_with_one_checkpoint()
        upstream_save = CheckpointHook._save_checkpoint_with_step.__wrapped__
        with self.assertRaises(_Interrupted):
            upstream_save(hook, runner, 4, dict(epoch=0, iter=4))
        # The only checkpoint is gone, and last_checkpoint still names it.
        self.assertFalse(os.path.exists(old))
        self.assertEqual(self._last_checkpoint(runner), old)

    def test_deferred_removal_keeps_the_last_checkpoint(self):
        runner, hook, old = self._runner_with_one_checkpoint()
        with self.assertRaises(_Interrupted):
            hook._save_checkpoint_with_step(runner, 4, dict(epoch=0, iter=4))
        self.assertTrue(compat.is_complete_checkpoint(old))
        self.assertEqual(self._last_checkpoint(runner), old)

    def test_deferred_removal_still_removes_after_saving(self):
        runner, hook, old = self._runner_with_one_checkpoint()
        del runner.save_checkpoint  # not interrupted this time
        hook._save_checkpoint_with_step(runner, 4, dict(epoch=0, iter=4))
        new = os.path.join(runner.work_dir, 'iter_4.pth')
        self.assertFalse(os.path.exists(old))
        self.assertTrue(compat.is_complete_checkpoint(new))
        self.assertEqual(self._last_checkpoint(runner), new)


def _kill_scene(work_dir, last_checkpoint):
    """A work dir after a kill: a complete ``iter_2.pth``, a truncated
    ``iter_4.pth``, and ``last_checkpoint`` holding ``last_checkpoint``
    (None: no such file)."""
    os.makedirs(work_dir)
    good = os.path.join(work_dir, 'iter_2.pth')
    torch.save(dict(meta=dict(iter=2)), good)
    with open(good, 'rb') as f:
        data = f.read()
    with open(os.path.join(work_dir, 'iter_4.pth'), 'wb') as f:
        f.write(data[:len(data) // 2])
    if last_checkpoint is not None:
        with open(os.path.join(work_dir, 'last_checkpoint'), 'w') as f:
            f.write(last_checkpoint)
    return good


@pytest.mark.parametrize('recorded', ['', 'iter_4.pth', 'iter_6.pth', None])
def test_upstream_find_latest_checkpoint_trusts_last_checkpoint(
        tmp_path, recorded):
    """Empty (killed while it was written), a truncated or a missing file
    (killed mid-save by mmengine alone), no file (killed between a checkpoint
    and it): upstream returns it as it is, the fix the newest complete
    checkpoint."""
    from mmengine.runner import find_latest_checkpoint
    work_dir = str(tmp_path / 'work')
    text = recorded and os.path.join(work_dir, recorded)
    good = _kill_scene(work_dir, text)
    assert find_latest_checkpoint.__wrapped__(work_dir) == text
    assert find_latest_checkpoint(work_dir) == good


def test_find_latest_checkpoint_trusts_a_complete_last_checkpoint(tmp_path):
    from mmengine.runner import find_latest_checkpoint
    work_dir = str(tmp_path / 'work')
    good = _kill_scene(work_dir, None)
    newer = os.path.join(work_dir, 'iter_6.pth')
    torch.save({}, newer)
    with open(os.path.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(good)
    # What last_checkpoint names wins when it is whole (upstream's rule).
    assert find_latest_checkpoint(work_dir) == good
    os.remove(good)
    assert find_latest_checkpoint(work_dir) == newer
    # Nothing complete: upstream's answer, for the tools to report.
    os.remove(newer)
    assert find_latest_checkpoint(work_dir) == good
    assert find_latest_checkpoint(str(tmp_path / 'empty')) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason='the bug is CPU-only')
def test_upstream_amp_optim_wrapper_needs_an_accelerator():
    """Mmengine's autocast runs CPU bf16, but its AmpOptimWrapper cannot be
    built without an accelerator.

    When this fails, remove fix 4
    (CPUAmpOptimWrapper, use_cpu_amp): ``tools/train.py --amp`` then sets
    AmpOptimWrapper with dtype='bfloat16', loss_scale=dict(enabled=False)
    on the CPU.
    """
    import mmengine.device
    from mmengine.optim import AmpOptimWrapper
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    from mmengine.runner.amp import autocast
    model = torch.nn.Linear(2, 2)
    with autocast(device_type='cpu', dtype=torch.bfloat16):
        assert model(torch.ones(1, 2)).dtype == torch.bfloat16
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype='bfloat16',
            loss_scale=dict(enabled=False))
    wrapper = compat.CPUAmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.cast_dtype is torch.bfloat16
    assert not wrapper.loss_scaler.is_enabled()
    # The device check is mmengine's again after the constructor.
    assert amp_optimizer_wrapper.is_cuda_available is \
        mmengine.device.is_cuda_available
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix is CPU-only')
def test_cpu_amp_refuses_what_cpu_autocast_does_not_do():
    params = list(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="bf16 only.*dtype='float16'"):
        compat.CPUAmpOptimWrapper(
            optimizer=torch.optim.SGD(params, lr=0.1), dtype='float16')
    with pytest.raises(ValueError, match="no loss scaling.*'dynamic'"):
        compat.CPUAmpOptimWrapper(
            optimizer=torch.optim.SGD(params, lr=0.1), loss_scale='dynamic')


@pytest.mark.skipif(torch.cuda.is_available(), reason='the fix is CPU-only')
def test_use_cpu_amp_sets_the_config_and_registers_once():
    from mmengine.optim import build_optim_wrapper
    cfg = Config(
        dict(
            optim_wrapper=dict(
                type='OptimWrapper',
                optimizer=dict(type='SGD', lr=0.1),
                loss_scale=512.,
                clip_grad=dict(max_norm=1.0))))
    compat.use_cpu_amp(cfg)
    compat.use_cpu_amp(cfg)  # a second call registers nothing twice
    assert cfg.optim_wrapper.to_dict() == dict(
        type='CPUAmpOptimWrapper',
        optimizer=dict(type='SGD', lr=0.1),
        clip_grad=dict(max_norm=1.0),
        dtype='bfloat16')
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper) is compat.CPUAmpOptimWrapper
    assert wrapper.cast_dtype is torch.bfloat16
