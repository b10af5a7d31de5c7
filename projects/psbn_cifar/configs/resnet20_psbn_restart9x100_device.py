# resnet20_psbn_restart9x100.py on the fast data path (data and
# augmentation on the device, see _base_/datasets/cifar10_bs128_device.py).
# Any CIFAR experiment switches the same way: cifar10_bs128_device.py in
# place of cifar10_bs128.py.
_base_ = [
    '_base_/models/resnet_cifar.py', '_base_/datasets/cifar10_bs128_device.py',
    '_base_/schedules/sgd_restart_9x100.py', '_base_/default_runtime.py'
]
model = dict(backbone=dict(norm_cfg=dict(type='psBN', requires_grad=True)))
