# ResNet-110 snapshot ensemble (paper §5.2, Table 1), BN, lr 0.2: 200 epochs
# in 5 rounds of 40 with cosine restarts; the last 3 snapshots are
# ensembled (averaged softmax). The per-round table (top-1, FLOPs sparsity)
# and the ensemble accuracy are logged at the end and written to
# work_dir/snapshots/rounds.json. Paper: 94.63 %, sparsity 31.6 % at round 5.
_base_ = [
    '_base_/models/resnet_cifar.py', '_base_/datasets/cifar10_bs128.py',
    '_base_/schedules/sgd_restart_5x40.py', '_base_/default_runtime.py'
]
model = dict(backbone=dict(depth=110))
optim_wrapper = dict(optimizer=dict(lr=0.2))
custom_hooks = [
    dict(type='CollapseMonitorHook', interval=100),
    dict(
        type='RestartSnapshotHook',
        ensemble=3,
        reference=dict(
            ensemble=94.63,
            sparsity={5: 31.6},
            label='Zhou et al. 2020, BN, lr 0.2')),
]
