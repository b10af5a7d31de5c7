# ResNet-110 snapshot ensemble (paper §5.2, Table 1), psBN, lr 0.2; see
# resnet110_bn_snapshot5x40_lr0.2.py. Paper: 94.86 %, sparsity 5.3 % at
# round 5.
_base_ = './resnet110_bn_snapshot5x40_lr0.2.py'
model = dict(backbone=dict(norm_cfg=dict(type='psBN', requires_grad=True)))
custom_hooks = [
    dict(type='CollapseMonitorHook', interval=100),
    dict(
        type='RestartSnapshotHook',
        ensemble=3,
        reference=dict(
            ensemble=94.86,
            sparsity={5: 5.3},
            label='Zhou et al. 2020, psBN, lr 0.2')),
]
