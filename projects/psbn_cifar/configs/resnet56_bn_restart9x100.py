# ResNet-56, BN + ReLU, 9 rounds x 100 epochs of cosine restarts
# (paper §3, §5.1).
_base_ = [
    '_base_/models/resnet_cifar.py', '_base_/datasets/cifar10_bs128.py',
    '_base_/schedules/sgd_restart_9x100.py', '_base_/default_runtime.py'
]
model = dict(backbone=dict(depth=56))
