# ResNet-110 snapshot ensemble (paper §5.2, Table 1), psBN, lr 0.1; see
# resnet110_bn_snapshot5x40_lr0.2.py. Paper: 94.75 %.
_base_ = './resnet110_psbn_snapshot5x40_lr0.2.py'
optim_wrapper = dict(optimizer=dict(lr=0.1))
custom_hooks = [
    dict(type='CollapseMonitorHook', interval=100),
    dict(
        type='RestartSnapshotHook',
        ensemble=3,
        reference=dict(ensemble=94.75,
                       label='Zhou et al. 2020, psBN, lr 0.1')),
]
