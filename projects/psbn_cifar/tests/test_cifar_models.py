# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR ResNets, VGG and the classifier wrapper."""
import pytest
import torch
import torch.nn as nn

import psbn_cifar  # noqa: F401
from mmdet_psbn.models.layers import PostShiftedBatchNorm2d
from psbn_cifar.registry import MODELS


def classifier(backbone, in_channels=64):
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=10,
                in_channels=in_channels)))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('depth,millions,exact', [(20, 0.27, 269722),
                                                  (56, 0.85, 853018),
                                                  (110, 1.7, 1727962)])
def test_resnet_parameter_counts_match_he_et_al(depth, millions, exact):
    """He et al.

    (2016) Table 6: 0.27 M, 0.85 M, 1.7 M with option A and the 10-way
    classifier; the exact counts are those of option A.
    """
    model = classifier(dict(type='CIFARResNet', depth=depth))
    assert n_params(model) == exact
    assert round(n_params(model) / 1e6, 2 if depth < 100 else 1) == millions


def test_shortcut_b_adds_projection_and_norm():
    a = classifier(dict(type='CIFARResNet', depth=20, shortcut='A'))
    b = classifier(
        dict(
            type='CIFARResNet',
            depth=20,
            shortcut='B',
            norm_cfg=dict(type='psBN')))
    # 1x1 convs 16->32, 32->64 plus their norm layers (2 x 32, 2 x 64).
    assert n_params(b) - n_params(a) == 16 * 32 + 32 * 64 + 2 * 32 + 2 * 64
    assert isinstance(b.backbone.layer2[0].downsample[1],
                      PostShiftedBatchNorm2d)
    out = b(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_stage_shapes_and_option_a_zero_pads():
    net = MODELS.build(
        dict(type='CIFARResNet', depth=20, out_indices=(0, 1, 2)))
    outs = net(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 32, 32), (32, 16, 16),
                                                  (64, 8, 8)]
    short = net.layer2[0].downsample
    x = torch.randn(1, 16, 8, 8)
    y = short(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()


def test_norm_and_activation_come_from_the_config():
    net = MODELS.build(
        dict(
            type='CIFARResNet',
            depth=20,
            norm_cfg=dict(type='psBN', alpha=0.2),
            act_cfg=dict(type='LeakyReLU', negative_slope=0.01)))
    block = net.layer1[0]
    assert isinstance(net.bn1, PostShiftedBatchNorm2d)
    assert isinstance(block.bn2, PostShiftedBatchNorm2d)
    assert block.bn1.alpha.item() == pytest.approx(0.2)
    assert isinstance(block.act1, nn.LeakyReLU)
    assert block.act1.negative_slope == 0.01
    vgg = MODELS.build(
        dict(
            type='CIFARVGG',
            depth=16,
            norm_cfg=dict(type='psBN'),
            act_cfg=dict(type='LeakyReLU', negative_slope=0.01)))
    convs = [m for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert isinstance(vgg.features[0].bn, PostShiftedBatchNorm2d)
    assert vgg.features[0].activate.negative_slope == 0.01


def test_vgg16_parameter_count_and_output():
    model = classifier(dict(type='CIFARVGG', depth=16), in_channels=512)
    # 13 convs (no bias) + 13 BN + a 512 x 10 linear layer.
    assert n_params(model) == 14724042
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bn_checkpoint_loads_into_psbn_model_unchanged():
    """Same keys (bn1, bn2, ...) plus alpha; the eval output is the BN
    model's."""
    torch.manual_seed(0)
    bn = classifier(dict(type='CIFARResNet', depth=20))
    for m in bn.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
    ps = classifier(
        dict(type='CIFARResNet', depth=20, norm_cfg=dict(type='psBN')))
    bn_keys = set(bn.state_dict())
    ps_keys = set(ps.state_dict())
    assert 'backbone.layer1.0.bn1.weight' in bn_keys
    assert ps_keys - bn_keys == {
        k[:-len('weight')] + 'alpha'
        for k in bn_keys
        if k.endswith('bn1.weight') or k.endswith('bn2.weight')
    }
    ps.load_state_dict(bn.state_dict(), strict=True)
    bn.eval(), ps.eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ps(x), bn(x))


def test_classifier_modes():
    from mmengine.structures import BaseDataElement
    model = classifier(
        dict(type='CIFARResNet', depth=8, base_channels=4), in_channels=16)
    x = torch.randn(3, 3, 32, 32)
    samples = [BaseDataElement(gt_label=torch.tensor([i])) for i in range(3)]
    loss = model(x, samples, mode='loss')['loss']
    logits = model(x)
    torch.testing.assert_close(
        loss, nn.functional.cross_entropy(logits, torch.arange(3)))
    preds = model(x, samples, mode='predict')
    torch.testing.assert_close(
        torch.stack([p.pred_score for p in preds]), logits.softmax(1))
    with pytest.raises(ValueError, match="got 'bogus'"):
        model(x, mode='bogus')


@pytest.mark.parametrize('cfg,msg', [
    (dict(type='CIFARResNet', depth=21), 'got 21'),
    (dict(type='CIFARResNet', depth=20, shortcut='C'), "got 'C'"),
    (dict(type='CIFARVGG', depth=15), 'got 15'),
])
def test_bad_arguments_name_the_value(cfg, msg):
    with pytest.raises(ValueError, match=msg):
        MODELS.build(cfg)


def test_names_are_in_the_project_scope_not_the_root():
    from mmengine import registry as root

    from psbn_cifar import registry
    for reg, name in ((registry.MODELS, 'ImageClassifier'), (registry.MODELS,
                                                             'LinearClsHead'),
                      (registry.MODELS, 'CIFARResNet'), (registry.DATASETS,
                                                         'CIFAR10'),
                      (registry.TRANSFORMS,
                       'PackInputs'), (registry.TRANSFORMS, 'RandomCrop'),
                      (registry.METRICS, 'Accuracy'), (registry.HOOKS,
                                                       'RestartSnapshotHook')):
        assert reg.scope == 'psbn_cifar'
        assert name in reg.module_dict, name
        assert reg.get(name).__module__.startswith('psbn_cifar')
        assert reg.parent is getattr(root, reg.parent.name.upper() + 'S')
        assert name not in reg.parent.module_dict, name
    # psBN is found from the project's scope through the root.
    assert registry.MODELS.get('psBN').__name__ == 'PostShiftedBatchNorm2d'
    assert registry.HOOKS.get('CollapseMonitorHook') is not None
