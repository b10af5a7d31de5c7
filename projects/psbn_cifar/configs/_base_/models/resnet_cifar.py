# He et al.'s CIFAR ResNet: 3 stages of 16/32/64 channels, basic blocks,
# option-A (zero-padding) shortcuts. Depth 20 here: 0.27 M parameters
# (56: 0.85 M, 110: 1.7 M). Experiment configs set depth, norm, activation.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='CIFARResNet',
        depth=20,
        shortcut='A',
        norm_cfg=dict(type='BN', requires_grad=True),
        act_cfg=dict(type='ReLU', inplace=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64))
