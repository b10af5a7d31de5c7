# ResNet-20, BN + LeakyReLU (slope 0.01), 9 x 100 epochs of cosine restarts
# (paper §5.1).
_base_ = [
    '_base_/models/resnet_cifar.py', '_base_/datasets/cifar10_bs128.py',
    '_base_/schedules/sgd_restart_9x100.py', '_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        act_cfg=dict(type='LeakyReLU', negative_slope=0.01, inplace=True)))
