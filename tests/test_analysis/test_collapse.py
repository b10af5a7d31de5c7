# Copyright (c) mmdet-psbn contributors. All rights reserved.
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmdet_psbn.analysis import (attach_flops, channel_flops, measure_model,
                                 measure_state_dict)
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d


def set_affine(bn, gamma, beta):
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))


class Block(nn.Module):
    """Conv1 -> bn1 -> relu -> conv2 -> bn2 -> (+= y) -> relu -> conv3.

    By hand, for an 8x8 input (multiply-adds):
      conv1: 3*9*64 = 1728 per output channel, x4 = 6912
      conv2: 4*1*64 = 256 per output channel,  x4 = 1024
      conv3: 4*9*64 = 2304 per output channel, x2 = 4608   total 12544
      bn1 channel: producer conv1 1728 + consumer conv2 2*... = 4*1*64 256
      bn2 channel: producer conv2 256 only (its output meets a residual
      addition before conv3, so conv3 keeps that input channel).
    """

    def __init__(self, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = norm(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = norm(4)
        self.conv3 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        z = self.bn2(self.conv2(y))
        z += y
        return self.conv3(self.relu(z))


def test_collapsed_and_dead_by_definition():
    m = Block()
    # |gamma|: collapsed below 1e-3. P = Phi(beta/|gamma|) < 1e-3 is dead.
    set_affine(m.bn1, [1.0, 5e-4, -2e-4, 1.0], [0.0, 0.1, -0.1, -3.5])
    set_affine(m.bn2, [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    s = measure_model(m)
    assert s.names == ['bn1', 'bn2'] and s.kinds == ['BN', 'BN']
    assert s.collapsed.tolist() == [False, True, True, False] + [False] * 4
    # ch2: -0.1/2e-4 -> dead; ch3: Phi(-3.5) = 2.3e-4 < 1e-3 -> dead
    assert s.dead.tolist() == [False, False, True, True] + [False] * 4
    assert s.summary()['collapsed'] == pytest.approx(2 / 8)
    assert s.summary()['dead'] == pytest.approx(2 / 8)
    assert s.activation_prob()[3] == pytest.approx(
        0.5 * math.erfc(3.5 / math.sqrt(2)))


def test_alpha_moves_a_channel_out_of_the_dead_region():
    bn, ps = Block(), Block(PostShiftedBatchNorm2d)
    for m in (bn, ps):
        set_affine(m.bn1, [0.1] * 4, [-0.35] * 4)
    # BN: -0.35/0.1 = -3.5 -> dead; psBN: (-0.35 + 0.1)/0.1 = -2.5 -> alive
    assert measure_model(bn).dead[:4].all()
    assert not measure_model(ps).dead[:4].any()
    assert measure_model(ps).kinds == ['psBN', 'psBN']


def test_state_dict_and_model_agree():
    m = Block(PostShiftedBatchNorm2d)
    set_affine(m.bn1, [1.0, 5e-4, 0.1, 1.0], [0.0, 0.1, -0.45, -3.5])
    a, b = measure_model(m), measure_state_dict(m.state_dict())
    assert a.names == b.names and a.kinds == b.kinds
    np.testing.assert_allclose(a.shifted_beta, b.shifted_beta, rtol=1e-6)
    assert (a.dead == b.dead).all() and (a.collapsed == b.collapsed).all()


def test_group_norm_is_measured():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
    set_affine(m[1], [1.0, 0.0, 1.0, 1.0], [0.0, -1.0, 0.0, 0.0])
    s = measure_model(m)
    assert s.kinds == ['GN'] and s.dead.tolist() == [False, True, False, False]


def test_zero_init_reported_apart_and_carried_by_name():
    m = Block()
    set_affine(m.bn2, [0.0] * 4, [0.0] * 4)  # zero_init_residual
    first = measure_model(m)
    assert first.zero_init.tolist() == [False, True]
    assert first.summary()['collapsed'] == 0.0
    assert first.summary()['dead'] == 0.0
    assert first.summary()['zero_init'] == pytest.approx(0.5)
    assert first.summary()['zero_init_dead'] == 1.0  # beta 0, gamma 0
    # A few steps later gamma is tiny but not 0: still zero-init, not a
    # false alarm -- but only because the name is passed on.
    set_affine(m.bn2, [1e-5, 2e-5, 3e-5, 2.0], [1e-4] * 4)
    stateless = measure_model(m)
    assert stateless.summary()['collapsed'] == pytest.approx(3 / 8)
    later = measure_model(m, zero_init_layers=first.zero_init_layers)
    assert later.summary()['collapsed'] == 0.0
    assert later.summary()['zero_init'] == pytest.approx(3 / 8)  # grown: 1


def test_transitions_count_entered_and_recovered():
    m = Block(PostShiftedBatchNorm2d)
    set_affine(m.bn1, [1.0, 1.0, 1.0, 1.0], [0.0, -5.0, 0.0, -5.0])
    before = measure_model(m)
    set_affine(m.bn1, [1.0, 1.0, 1.0, 1.0], [-5.0, 0.0, -5.0, -5.0])
    after = measure_model(m)
    assert after.transitions(before) == dict(entered_dead=2, recovered=1)


def test_flops_match_hand_count_and_sparsity():
    m = Block()
    f = channel_flops(m, torch.zeros(1, 3, 8, 8))
    assert f.total == 12544
    assert f.removable['bn1'].tolist() == [1728 + 256] * 4
    assert f.removable['bn2'].tolist() == [256] * 4
    assert f.links['bn1'] == dict(producers=['conv1'], consumers=['conv2'])
    assert f.links['bn2'] == dict(producers=['conv2'], consumers=[])
    set_affine(m.bn1, [0.0, 1.0, 1.0, 1.0], [0.5, 0, 0, 0])
    set_affine(m.bn2, [1.0, 1e-4, 1.0, 1.0], [0, 0.5, 0, 0])
    s = attach_flops(measure_model(m), f)
    # conv2's pair (input 0, output 1) is in both channels' 1984 and 256:
    # counted once, 64 MACs less than their sum
    assert s.sparsity() == pytest.approx((1984 + 256 - 64) / 12544)
    # the pass left training mode and running statistics alone
    m.train()
    channel_flops(m, torch.zeros(1, 3, 8, 8))
    assert m.training and m.bn1.num_batches_tracked.item() == 0


def test_sparsity_counts_a_conv_between_collapsed_channels_once():
    # The middle conv reads bn0's channels and feeds bn1's: with both
    # collapsed, summing per channel counts it twice, past 100 %.
    m = nn.Sequential(
        nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
    f = channel_flops(m, torch.zeros(1, 1, 4, 4))
    assert f.total == 1 * 4 * 16 + 4 * 4 * 9 * 16  # 64 + 2304
    set_affine(m[1], [1e-5] * 4, [0.5] * 4)  # (all exactly 0: zero-init)
    set_affine(m[4], [1e-4] * 4, [0.5] * 4)
    s = attach_flops(measure_model(m), f)
    naive = (f.removable['1'].sum() + f.removable['4'].sum()) / f.total
    assert naive == pytest.approx((64 + 2304 + 2304) / 2368)  # 1.97
    assert s.sparsity() == pytest.approx(1.0)
    # input channel 0 and output channel 1 of the middle conv: 4 + 4 - 1
    # of its 16 (input, output) pairs, 9 * 16 = 144 MACs each
    set_affine(m[1], [0.0, 1, 1, 1], [0.5] * 4)
    set_affine(m[4], [1, 1e-4, 1, 1], [0.5] * 4)
    s = attach_flops(measure_model(m), f)
    assert s.sparsity() == pytest.approx((16 + 7 * 144) / 2368)
    # the Block: conv2 between bn1 and bn2, conv1 fully removed
    b = Block()
    f = channel_flops(b, torch.zeros(1, 3, 8, 8))
    set_affine(b.bn1, [1e-5] * 4, [0.5] * 4)
    set_affine(b.bn2, [1e-5] * 4, [0.5] * 4)
    s = attach_flops(measure_model(b), f)
    assert s.sparsity() == pytest.approx((6912 + 1024) / 12544)


def test_sparsity_with_grouped_convs_counts_pairs_within_groups():
    m = nn.Sequential(
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 1, groups=2), nn.BatchNorm2d(4))
    f = channel_flops(m, torch.zeros(1, 4, 2, 2))
    assert f.total == 4 * 4 * 4 + 4 * 2 * 4
    set_affine(m[1], [0.0, 1, 1, 1], [0.5] * 4)  # input 0 of group 0
    set_affine(m[4], [1, 1, 0.0, 1], [0.5] * 4)  # output 2, group 1
    s = attach_flops(measure_model(m), f)
    # conv0 loses output 0 (4 inputs x 4 pixels); the grouped conv loses
    # input 0 (2 outputs) and output 2 (2 inputs), no shared pair
    assert s.sparsity() == pytest.approx((16 + 8 + 8) / 96)
    set_affine(m[4], [0.0, 1, 1, 1], [0.5] * 4)  # output 0, group 0
    s = attach_flops(measure_model(m), f)
    assert s.sparsity() == pytest.approx((16 + (2 + 2 - 1) * 4) / 96)


def test_flops_through_pooling_and_grouped_convs():
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    f = channel_flops(m, torch.zeros(1, 2, 8, 8))
    # producer: 2*9*64 = 1152; consumer after the pool (4x4), grouped:
    # (4/2)*9*16 = 288
    assert f.removable['1'].tolist() == [1152 + 288] * 4
    assert f.total == 4 * 1152 + 4 * (2 * 9 * 16)


def test_bad_thresholds():
    with pytest.raises(ValueError, match='gamma_thr .* got -1'):
        measure_model(Block(), gamma_thr=-1)
    with pytest.raises(ValueError, match='prob_thr .* got 1.5'):
        measure_model(Block(), prob_thr=1.5)


def test_mmdet_resnet_graph():
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmdet')
    r = MODELS.build(dict(type='ResNet', depth=50, norm_cfg=dict(type='psBN')))
    f = channel_flops(r, torch.zeros(1, 3, 64, 64))
    # ResNet-50 is 4.1 GMACs at 224x224, so 64x64 is about (64/224)^2 of it
    assert f.total / 1e9 == pytest.approx(4.09 * (64 / 224)**2, rel=0.03)
    # stem BN reaches both first convs through the max-pool
    assert f.links['bn1']['consumers'] == [
        'layer1.0.conv1', 'layer1.0.downsample.0'
    ]
    # the last BN of a block meets the residual addition: producer only
    assert f.links['layer1.0.bn3'] == dict(
        producers=['layer1.0.conv3'], consumers=[])
    assert f.links['layer2.1.bn2']['consumers'] == ['layer2.1.conv3']
