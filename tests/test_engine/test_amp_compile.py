# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Mixed precision and ``torch.compile`` as users switch them on.

On real mmengine Runners and a real ``tools/train.py --amp`` run: psBN
models train under autocast (bf16 on the CPU through
:class:`mmdet_psbn.compat.CPUAmpOptimWrapper`; fp16 with CUDA) and with
the Runner's ``compile=True`` (inductor); alpha is in the low-precision and
the compiled graphs (outputs within the dtype's tolerance of fp32, and
alpha apart from the same model without it); the collapse monitor's
measurements stay fp32.
"""
import copy
import json
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import Runner
from mmengine.runner.amp import autocast
from torch.utils.data import Dataset

from mmdet_psbn.analysis.collapse import ActivationProbe, measure_model
from mmdet_psbn.compat import CPUAmpOptimWrapper, use_cpu_amp
from mmdet_psbn.engine.hooks import CollapseMonitorHook
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from mmdet_psbn.models.layers.psbn import is_post_shifted
from mmdet_psbn.utils.io import load_checkpoint
from ..conftest import REPO, iter_schedule, run_tool, write_toy_config

ALPHA = 0.1
ON_CPU = not torch.cuda.is_available()
#: Dead for every input: beta + alpha = -10 + alpha, |x_hat| a few units.
DEAD_BIAS = -10.0
#: How far a bf16 (8-bit significand) output of the three layers may be
#: from fp32 (outputs of BN scale, up to ~5 in training mode), element-wise,
#: and on average (dropping alpha moves the average by ~alpha).
BF16_TOL = dict(rtol=2**-6, atol=2**-4, mean=2**-7)


class ConvPsbnNet(BaseModel):
    """Two conv-psBN-ReLU blocks and a conv-psBN head, whose psBN output (no
    ReLU after it) is the output; the loss is a cross-entropy on its spatial
    mean."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = PostShiftedBatchNorm2d(8, alpha=ALPHA)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = PostShiftedBatchNorm2d(8, alpha=ALPHA)
        self.conv3 = nn.Conv2d(8, 4, 1)
        self.bn3 = PostShiftedBatchNorm2d(4, alpha=ALPHA)
        self.relu = nn.ReLU()
        with torch.no_grad():  # three dead channels for the probe to find
            self.bn2.bias[:3] = DEAD_BIAS

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.relu(self.bn1(self.conv1(inputs)))
        x = self.relu(self.bn2(self.conv2(x)))
        out = self.bn3(self.conv3(x))
        if mode == 'loss':
            return dict(
                loss=F.cross_entropy(out.mean((2, 3)).float(), data_samples))
        return out


class Images(Dataset):

    def __init__(self, num=16):
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randn(num, 3, 8, 8, generator=gen)
        self.labels = torch.randint(0, 4, (num, ), generator=gen)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return dict(inputs=self.images[i], data_samples=self.labels[i])


class Recorder(Hook):
    """Notes the dtypes the ps layers see in training, and the weights and
    batch of each iteration's forward (its hooks go before the monitor's graph
    pass, an eval forward outside autocast)."""

    priority = 'HIGH'

    def __init__(self):
        self.dtypes, self.weights, self.batches = set(), {}, {}
        self._handles = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.weights[runner.iter] = copy.deepcopy(runner.model.state_dict())
        self.batches[runner.iter] = data_batch
        for m in runner.model.modules():
            if is_post_shifted(m):
                self._handles.append(m.register_forward_hook(self._note))

    def _note(self, module, args, output):
        self.dtypes.add(
            (args[0].dtype, output.dtype, torch.is_autocast_enabled('cpu')))

    def after_train_iter(self, runner, *args, **kwargs):
        for handle in self._handles:
            handle.remove()
        self._handles = []


def build_runner(work_dir,
                 *,
                 amp=False,
                 compile=None,
                 iters=4,
                 interval=2,
                 hooks=(),
                 alpha=ALPHA):
    """A Runner on :class:`ConvPsbnNet` (SGD with weight decay, monitor on
    every ``interval`` iterations); ``amp`` as ``tools/train.py --amp`` does it
    on the CPU, ``compile`` the Runner's ``compile`` setting."""
    torch.manual_seed(0)
    model = ConvPsbnNet()
    for m in model.modules():
        if is_post_shifted(m):
            m.alpha.fill_(alpha)
    cfg = Config(
        dict(
            optim_wrapper=dict(
                optimizer=dict(
                    type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))))
    if amp:
        use_cpu_amp(cfg)
    monitor = CollapseMonitorHook(interval=interval)
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Images(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=iters),
        optim_wrapper=cfg.optim_wrapper,
        custom_hooks=[monitor, *hooks],
        default_hooks=dict(checkpoint=None),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        # Its own message hub (a timestamp, the default name, is shared by
        # the runners built in the same second).
        experiment_name=uuid.uuid4().hex,
        cfg=dict(compile=compile))
    return runner, monitor


def losses(runner):
    return runner.message_hub.get_scalar('train/loss').data[0]


def bf16_rounded(values):
    return torch.from_numpy(values).to(torch.bfloat16).double().numpy()


# ------------------------------------------------------------ mixed precision
@pytest.mark.skipif(
    not ON_CPU,
    reason='the CPU path (with CUDA, --amp is '
    'mmengine\'s fp16 AmpOptimWrapper)')
def test_bf16_training_through_the_runner_keeps_the_monitor_fp32(tmp_path):
    recorder = Recorder()
    runner, monitor = build_runner(
        tmp_path, amp=True, iters=4, interval=2, hooks=[recorder])
    runner.train()

    wrapper = runner.optim_wrapper
    assert type(wrapper) is CPUAmpOptimWrapper
    assert isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.cast_dtype == torch.bfloat16
    assert not wrapper.loss_scaler.is_enabled()  # bf16: no loss scaling
    assert 'loss_scaler' in wrapper.state_dict()
    # The ps layers ran under CPU autocast on bf16 convolution outputs.
    assert recorder.dtypes == {(torch.bfloat16, torch.bfloat16, True)}
    model = runner.model
    start = recorder.weights[0]
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    assert not torch.equal(model.bn1.weight, start['bn1.weight'])
    assert np.isfinite(losses(runner)).all()

    # gamma and beta + alpha are read from the fp32 parameters, exactly,
    # and are not bf16 values.
    stats = monitor._last
    assert stats.meta['iter'] == 4
    assert stats.names == ['bn1', 'bn2', 'bn3']
    assert stats.alphas == [pytest.approx(ALPHA)] * 3
    gamma = np.concatenate([
        getattr(model, n).weight.detach().abs().double().numpy()
        for n in stats.names
    ])
    beta = np.concatenate([
        (getattr(model, n).bias.detach() + ALPHA).double().numpy()
        for n in stats.names
    ])
    assert stats.abs_gamma.dtype == np.float64
    np.testing.assert_array_equal(stats.abs_gamma, gamma)
    np.testing.assert_array_equal(stats.shifted_beta, beta)
    assert not np.array_equal(stats.abs_gamma, bf16_rounded(stats.abs_gamma))
    fresh = measure_model(model)
    np.testing.assert_array_equal(stats.abs_gamma, fresh.abs_gamma)

    # The activation measure of iteration 4 (its forward ran on the weights
    # before its update, under autocast) equals an fp32 forward's.
    it, inactive = monitor._inactive
    assert it == 4 and set(inactive) == {'bn1', 'bn2'}  # the rectified
    fp32 = ConvPsbnNet()
    fp32.load_state_dict(recorder.weights[3])
    data = fp32.data_preprocessor(recorder.batches[3], True)
    with ActivationProbe(fp32, inactive) as probe, torch.no_grad():
        fp32(**data, mode='tensor')
    assert inactive.keys() == probe.inactive.keys()
    for name in inactive:
        np.testing.assert_array_equal(inactive[name], probe.inactive[name])
    assert inactive['bn2'][:3].all()  # the planted dead channels
    assert 'inactive' in monitor._history[-1]


AUTOCAST_CASES = [
    pytest.param('cpu', torch.bfloat16, BF16_TOL, id='cpu-bf16'),
    pytest.param(
        'cuda',
        torch.float16,
        dict(rtol=2**-9, atol=2**-7, mean=2**-10),
        id='cuda-fp16',
        marks=pytest.mark.skipif(ON_CPU, reason='needs CUDA')),
]


@pytest.mark.parametrize('device,dtype,tol', AUTOCAST_CASES)
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_alpha_is_in_the_autocast_graph(device, dtype, tol, training):
    torch.manual_seed(0)
    model = ConvPsbnNet().to(device).train(training)
    images = Images().images[:8].to(device)
    without = copy.deepcopy(model)
    without.bn3.alpha.zero_()  # what a graph that dropped alpha computes
    with torch.no_grad():
        ref = model(images)
        with autocast(device_type=device, dtype=dtype):
            out = model(images)
            out_without = without(images)
    assert out.dtype == dtype and ref.dtype == torch.float32
    torch.testing.assert_close(
        out.float(), ref, rtol=tol['rtol'], atol=tol['atol'])
    assert (out.float() - ref).abs().mean().item() < tol['mean']
    # Each element of the shift is the difference of two values rounded to
    # ``dtype``: alpha within one ulp of the largest of them.
    shift = (out - out_without).float()
    largest = torch.maximum(out.abs(), out_without.abs()).float().max()
    ulp = torch.finfo(dtype).eps * 2**torch.ceil(torch.log2(largest)).item()
    assert (shift - ALPHA).abs().max().item() <= ulp
    assert shift.mean().item() == pytest.approx(ALPHA, abs=tol['mean'])


@pytest.mark.skipif(not ON_CPU, reason='the CPU path')
def test_train_tool_amp_trains_psbn_retinanet_in_bf16(toy_coco, tmp_path):
    """``tools/train.py --amp`` on the CPU: the toy psBN RetinaNet-R18
    (gradient clipping, BN in training mode) trains two iterations under bf16
    autocast, with the monitor."""
    base = osp.join(REPO, 'configs', 'toy',
                    'retinanet_r18_fpn_toy_pretrain.py')
    cfg = write_toy_config(
        tmp_path / 'cfg.py',
        toy_coco,
        base=base,
        extra=iter_schedule(2, ckpt=2) + f"""
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2,
                 val_interval=100)  # no evaluation
model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
custom_imports = dict(imports=['mmdet_psbn', 'norm_dtype_hook'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='CollapseMonitorHook', interval=1),
                dict(type='NormDtypeHook', out_dir={str(tmp_path)!r})]
""")
    work_dir = tmp_path / 'work'
    proc = run_tool(['tools/train.py', cfg, '--amp', '--work-dir', work_dir])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "type='CPUAmpOptimWrapper'" in proc.stdout
    assert "dtype='bfloat16'" in proc.stdout

    with open(tmp_path / 'dtypes.json') as f:
        calls = json.load(f)
    psbn_calls = {c['name'] for c in calls}
    assert len(psbn_calls) == 20  # every psBN layer of the ResNet-18
    assert {(c['input'], c['output'], c['autocast'])
            for c in calls} == {('torch.bfloat16', 'torch.bfloat16', True)}

    ckpt = load_checkpoint(str(work_dir / 'iter_2.pth'))
    assert ckpt['optimizer']['loss_scaler'] == {}  # disabled: bf16
    state = ckpt['state_dict']
    alphas = [v for k, v in state.items() if k.endswith('.alpha')]
    assert len(alphas) == 20 and all(a.item() == pytest.approx(ALPHA)
                                     for a in alphas)
    for key, value in state.items():
        if value.is_floating_point():
            assert value.dtype == torch.float32, key
            assert torch.isfinite(value).all(), key
    with open(work_dir / 'collapse' / 'report.json') as f:
        report = json.load(f)
    assert [row['iter'] for row in report['history']] == [0, 1, 2]
    assert all('inactive' in row for row in report['history'])


# ---------------------------------------------------------------- compilation
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_psbn_compiles_in_one_graph_with_alpha_as_input(training):
    """``torch.compile(fullgraph=True)``: no graph break in the psBN forward,
    the output is eager's, and alpha is read from its buffer at run time
    (zeroing it moves the output by alpha), not baked in.

    Dynamo's capture is what is tested, so the backend is ``aot_eager``
    (1 s; inductor's code generation takes 10-25 s on 2 cores, and the
    Runner test below runs inductor).
    """
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = ConvPsbnNet().train(training)
    images = Images().images[:8]
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    with torch.no_grad():
        ref = model(images)
        out = compiled(images)
        torch.testing.assert_close(out, ref)
        model.bn3.alpha.zero_()
        out_without = compiled(images)
    torch.testing.assert_close(
        out - out_without, torch.full_like(out, ALPHA), rtol=0, atol=1e-5)


def test_runner_compile_trains_psbn_as_eager_does(tmp_path):
    """The Runner's ``compile=True`` (``torch.compile`` of ``train_step``,
    inductor): the same losses and weights as eager within fp32 tolerance, and
    the monitor finds the psBN layers and their alpha."""
    eager, eager_monitor = build_runner(tmp_path / 'eager', interval=1)
    eager.train()
    # What the comparison must tell apart: training without alpha.
    no_alpha, _ = build_runner(tmp_path / 'no_alpha', alpha=0.0)
    no_alpha.train()
    assert not np.allclose(losses(no_alpha), losses(eager), rtol=1e-3)

    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()
    runner, monitor = build_runner(
        tmp_path / 'compiled', compile=True, interval=1)
    runner.train()
    assert runner.model.train_step._torchdynamo_orig_callable.__func__ \
        is BaseModel.train_step
    assert counters['stats']['unique_graphs'] > 0
    breaks = '\n'.join(counters['graph_break'])
    assert 'psbn' not in breaks.lower(), breaks

    np.testing.assert_allclose(
        losses(runner), losses(eager), rtol=1e-5, atol=1e-6)
    eager_state = eager.model.state_dict()
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(
            value, eager_state[key], rtol=1e-4, atol=1e-5, msg=key)

    # Only train_step is compiled: runner.model is the module itself.
    assert runner.model.__class__ is ConvPsbnNet
    stats = monitor._last
    assert stats.names == ['bn1', 'bn2', 'bn3']
    assert stats.alphas == [pytest.approx(ALPHA)] * 3
    np.testing.assert_array_equal(stats.abs_gamma,
                                  measure_model(runner.model).abs_gamma)
    np.testing.assert_allclose(
        stats.abs_gamma, eager_monitor._last.abs_gamma, rtol=1e-4, atol=1e-6)
    # With a probe in every iteration, the activation measure is eager's
    # (every other iteration too: the test below).
    inactive = [r.get('inactive') for r in monitor._history]
    assert None not in inactive and inactive[-1] > 0
    assert inactive == [r.get('inactive') for r in eager_monitor._history]


def test_runner_compile_activation_measure_every_other_iteration(tmp_path):
    """Measured every other iteration, the activation measure is there each
    time and equals eager's.

    torch.compile does not see forward hooks added
    after it compiled (``skip_nnmodule_hook_guards``): the monitor's probe
    is attached before the first compiled call and switched on when
    measuring. Dynamo's behaviour, whatever the backend: ``eager`` here.
    """
    eager, eager_monitor = build_runner(tmp_path / 'eager', iters=4)
    eager.train()
    torch._dynamo.reset()
    runner, monitor = build_runner(
        tmp_path / 'compiled', compile=dict(backend='eager'), iters=4)
    runner.train()
    want = [(r['iter'], r.get('inactive')) for r in eager_monitor._history]
    assert all(inactive is not None for _, inactive in want)
    assert [(r['iter'], r.get('inactive')) for r in monitor._history] == want
