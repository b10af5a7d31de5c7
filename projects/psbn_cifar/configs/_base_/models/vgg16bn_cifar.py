# VGG-16 with a norm layer after each of its 13 convs, 1x1x512 after five
# pools, one linear classifier: 14.7 M parameters.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='CIFARVGG',
        depth=16,
        norm_cfg=dict(type='BN', requires_grad=True),
        act_cfg=dict(type='ReLU', inplace=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=512))
