# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The dead measure covers rectified channels only, the activation measure, and
zero-init layers decided once per run (issue 11, section 1)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from mmdet_psbn.analysis import (attach_flops, channel_flops, measure_model,
                                 measure_state_dict)
from mmdet_psbn.analysis.collapse import ActivationProbe, CollapseStats
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d


def set_affine(bn, gamma, beta):
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(gamma, dtype=torch.float))
        bn.bias.copy_(torch.as_tensor(beta, dtype=torch.float))


class Residual(nn.Module):
    """Conv1 -> bn1 -> relu -> conv2 -> bn2 -> (+ identity) -> relu, and a
    downsample conv -> bn on the identity path, as mmdet's BasicBlock."""

    def __init__(self, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = norm(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = norm(4)
        self.downsample = nn.Sequential(nn.Conv2d(3, 4, 1), norm(4))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.downsample(x)
        return self.relu(out)


class LeakyThroughPool(nn.Module):
    """Bn -> max pool -> LeakyReLU, and a bn read by a sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.LeakyReLU(0.01)
        self.bn2 = nn.BatchNorm2d(4)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        y = self.act(self.pool(self.bn1(self.conv(x))))
        return self.gate(self.bn2(y))


def test_rectified_layers_from_the_graph():
    fm = channel_flops(Residual(), torch.zeros(1, 3, 8, 8))
    assert fm.rectified == {'bn1': True, 'bn2': False, 'downsample.1': False}
    assert fm.rectified_layers == ['bn1']
    fm = channel_flops(LeakyThroughPool(), torch.zeros(1, 3, 8, 8))
    assert fm.rectified == {'bn1': True, 'bn2': False}


def test_residual_branch_bn_is_not_dead_but_the_same_after_relu_is():
    m = Residual()
    dead_params = ([1.0, 1.0, 0.5, 0.5], [0.0, 0.0, -10.0, -10.0])
    set_affine(m.bn2, *dead_params)  # feeds the addition
    set_affine(m.downsample[1], *dead_params)
    fm = channel_flops(m, torch.zeros(1, 3, 8, 8))
    s = attach_flops(measure_model(m), fm)
    summary = s.summary()
    assert summary['dead_rule'] == 'rectified'
    assert summary['rectified_channels'] == 4
    assert summary['dead'] == 0.0
    assert s.transitions(attach_flops(measure_model(Residual()),
                                      fm))['entered_dead'] == 0
    # The same parameters on bn1, which a ReLU follows: 2 of 4 dead.
    set_affine(m.bn1, *dead_params)
    summary = attach_flops(measure_model(m), fm).summary()
    assert summary['dead'] == pytest.approx(2 / 4)
    # Without the graph every layer is assumed rectified, and said so.
    bare = measure_model(m).summary()
    assert bare['dead_rule'] == 'all'
    assert bare['dead'] == pytest.approx(6 / 12)
    rows = {
        r['name']: r
        for r in attach_flops(measure_model(m), fm).per_layer()
    }
    assert rows['bn1']['rectified'] and rows['bn1']['dead'] == 2
    assert not rows['bn2']['rectified'] and rows['bn2']['dead'] == 0


def test_resnet_rectified_channel_counts():
    """The counts of issue 11: mmdet ResNet-50 has 26,560 BN channels of
    which 18,944 (71 %) feed an addition; CIFAR ResNet-20 688 and 336."""
    from mmdet.models.backbones import ResNet

    from psbn_cifar.models import CIFARResNet
    for net, size, total, not_rect in ((ResNet(50), 64, 26560, 18944),
                                       (CIFARResNet(20), 16, 688, 336)):
        fm = channel_flops(net, torch.zeros(1, 3, size, size))
        s = attach_flops(measure_model(net), fm)
        assert s.num_channels == total
        assert total - int(s.summary()['rectified_channels']) == not_rect
        assert all(
            name.endswith(('bn1', 'bn2'))
            for name in fm.rectified_layers) or isinstance(net, CIFARResNet)


def test_activation_probe_counts_exactly_the_channels_never_positive():
    torch.manual_seed(0)
    m = Residual(PostShiftedBatchNorm2d).eval()
    set_affine(m.bn1, [1.0, 0.5, 0.5, 1e-4], [0.0, -4.0, -1.0, -1.0])
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        expected = ~(m.bn1(m.conv1(x)) > 0).any(dim=(0, 2, 3)).numpy()
    fm = channel_flops(m, x[:1])
    with ActivationProbe(m, fm.rectified_layers) as probe:
        with torch.no_grad():
            m(x)
    assert list(probe.inactive) == ['bn1']
    np.testing.assert_array_equal(probe.inactive['bn1'], expected)
    assert expected[3] and not expected[0]  # a real mix
    s = attach_flops(measure_model(m), fm).attach_inactive(probe.inactive)
    assert s.summary()['inactive'] == pytest.approx(expected.mean())
    # The hooks are gone after the block.
    assert not m.bn1._forward_hooks


def test_activation_probe_changes_nothing_in_training():

    def train(probe_every):
        torch.manual_seed(0)
        m = Residual(PostShiftedBatchNorm2d)
        opt = torch.optim.SGD(
            m.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
        gen = torch.Generator().manual_seed(1)
        losses = []
        for step in range(6):
            x = torch.randn(4, 3, 8, 8, generator=gen)
            if probe_every and step % probe_every == 0:
                with ActivationProbe(m, ['bn1', 'bn2']):
                    loss = m(x).square().mean()
            else:
                loss = m(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [p.detach().clone() for p in m.state_dict().values()]

    plain, with_probe = train(0), train(1)
    assert plain[0] == with_probe[0]
    for a, b in zip(plain[1], with_probe[1]):
        assert torch.equal(a, b)


def test_zero_init_is_decided_at_the_first_measurement_only():
    m = Residual()
    set_affine(m.bn2, [0.0] * 4, [0.0] * 4)  # zero_init_residual
    first = measure_model(m)
    assert first.zero_init.tolist() == [False, True, False]
    # bn2 grows: channels 0, 1 past the threshold, 2, 3 stay tiny.
    set_affine(m.bn2, [0.2, 0.3, 5e-4, 0.0], [0.0] * 4)
    second = measure_model(m, previous=first)
    assert second.zero_init.tolist() == [False, True, False]
    assert second.summary()['collapsed'] == 0.0
    # Channel 0 falls back below the threshold: collapsed, not zero-init.
    set_affine(m.bn2, [2e-4, 0.3, 5e-4, 0.0], [0.0] * 4)
    third = measure_model(m, previous=second)
    assert third.summary()['collapsed'] == pytest.approx(1 / 10)
    # bn1 collapses to exactly 0 late in training: collapsed, not hidden
    # as a zero-init layer.
    set_affine(m.bn1, [0.0] * 4, [0.0] * 4)
    fourth = measure_model(m, previous=third)
    assert fourth.zero_init.tolist() == [False, True, False]
    assert fourth.summary()['collapsed'] == pytest.approx(5 / 10)
    # The bookkeeping survives a checkpoint round trip (the hook's resume).
    restored = CollapseStats.from_state(fourth.state())
    np.testing.assert_array_equal(restored.grown, fourth.grown)
    fifth = measure_model(m, previous=restored)
    assert fifth.summary()['collapsed'] == pytest.approx(5 / 10)


def test_state_dict_series_passes_zero_init_on():
    m = Residual()
    set_affine(m.bn2, [0.0] * 4, [0.0] * 4)
    first = measure_state_dict(m.state_dict())
    set_affine(m.bn1, [0.0] * 4, [0.0] * 4)
    second = measure_state_dict(m.state_dict(), previous=first)
    assert second.zero_init.tolist() == [False, True, False]
    assert second.summary()['collapsed'] == pytest.approx(4 / 8)
