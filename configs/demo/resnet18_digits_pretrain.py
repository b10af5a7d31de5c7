# Stage 1 of `make demo` (tools/misc/demo.py): the stand-in for ImageNet
# pretraining. mmdet's ResNet-18 at a quarter of the width (base_channels
# 16: 16/32/64/128 channels, 0.7 M parameters), BN, classifying real MNIST
# digits (32x32 crops on colour backgrounds, 4,000 train / 1,000 test,
# tools/misc/make_digits_coco.py --cifar). Its backbone is what stage 2's
# RetinaNet loads, as mmdet loads torchvision's ImageNet ResNet.
#   python tools/misc/make_digits_coco.py data/digits_cifar_demo --cifar
#   python tools/train.py configs/demo/resnet18_digits_pretrain.py \
#       --work-dir work_dirs/demo/pretrain
# As an ImageNet schedule ends: SGD lr 0.1 decayed (cosine) to 1e-3 over 12
# epochs (756 iterations, 94.3 % test top-1 with 1 CPU thread), weight decay
# 1e-4, BN statistics and parameters trained, residual BNs from gamma=1
# (zero_init_residual=False, as torchvision's).
_base_ = [
    '../../projects/psbn_cifar/configs/_base_/datasets/cifar10_bs128.py',
    '../../projects/psbn_cifar/configs/_base_/default_runtime.py'
]
custom_imports = dict(
    imports=['psbn_cifar', 'mmdet.models'], allow_failed_imports=False)

data_root = 'data/digits_cifar_demo'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor', mean=[128.0] * 3, std=[64.0] * 3),
    backbone=dict(
        type='mmdet.ResNet',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        zero_init_residual=False,
        init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128))

# Digits are not mirror-symmetric: crops, no flips.
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='PackInputs'),
]
# NOTE: batch 64 on one process: 4,000 images = 63 iterations an epoch.
# num_workers=0 keeps CPU runs deterministic and starts fast.
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=250,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

max_epochs = 12
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=1e-3,
        by_epoch=True,
        begin=0,
        end=max_epochs)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
# No collapse monitor here: stage 2 measures these weights at its start.
