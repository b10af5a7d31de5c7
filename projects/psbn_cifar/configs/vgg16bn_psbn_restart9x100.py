# VGG16-BN, psBN (alpha 0.1) + ReLU, 9 x 100 epochs of cosine restarts
# (paper §5.1).
_base_ = [
    '_base_/models/vgg16bn_cifar.py', '_base_/datasets/cifar10_bs128.py',
    '_base_/schedules/sgd_restart_9x100.py', '_base_/default_runtime.py'
]
model = dict(backbone=dict(norm_cfg=dict(type='psBN', requires_grad=True)))
