# Stage 2 of `make demo` with BN: stage 1's digit-classification ResNet-18
# (the stand-in for ImageNet weights) finetuned as a RetinaNet on the real
# digit detection set, at a learning rate raised over the end of stage 1's
# schedule, as the paper finetunes from ImageNet. Its psBN twin,
# retinanet_r18_digits_psbn_finetune.py, differs only in the norm layer.
#   python tools/misc/make_digits_coco.py data/digits_coco_demo
#   python tools/train.py configs/demo/retinanet_r18_digits_bn_finetune.py \
#       --work-dir work_dirs/demo/finetune_bn
# What differs from mmdet's retinanet_r50_fpn_1x_coco.py, so that a few CPU
# minutes learn something, is marked NOTE.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_psbn'], allow_failed_imports=False)

data_root = 'data/digits_coco_demo/'
metainfo = dict(
    classes=tuple(str(i) for i in range(10)),
    palette=[(220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230),
             (106, 0, 228), (0, 60, 100), (0, 80, 100), (0, 0, 70),
             (0, 0, 192), (250, 170, 30)])
img_scale = (128, 128)
# Where stage 1 (resnet18_digits_pretrain.py) leaves its weights.
pretrained = 'work_dirs/demo/pretrain/epoch_12.pth'

model = dict(
    # NOTE: stage 1's normalisation (RGB, mean 128, std 64), as mmdet uses
    # the ImageNet weights' own.
    data_preprocessor=dict(mean=[128.0] * 3, std=[64.0] * 3, bgr_to_rgb=True),
    # NOTE: ResNet-18 at a quarter width (16/32/64/128 channels). The BN
    # layers train (statistics too: norm_eval=False) and no stage is
    # frozen, unlike mmdet's RetinaNet (norm_eval=True, frozen_stages=1):
    # batch 8 gives usable statistics, and a frozen layer can neither
    # collapse nor recover, which is what the demo is about.
    backbone=dict(
        depth=18,
        base_channels=16,
        norm_eval=False,
        frozen_stages=-1,
        zero_init_residual=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    # NOTE: 64 channels in the FPN and the head (mmdet: 256).
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    bbox_head=dict(
        num_classes=10,
        in_channels=64,
        feat_channels=64,
        # NOTE: GroupNorm in the head, so that it learns in a few hundred
        # iterations (mmdet's RetinaNet head has no norm).
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        # NOTE: anchors half the size (16-25 px at stride 8) for the
        # 20-48 px digits.
        anchor_generator=dict(octave_base_scale=2)))

# Digits are not mirror-symmetric: no flips.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# NOTE: batch 8 on one process: 512 images = 64 iterations an epoch;
# num_workers=0 keeps CPU runs deterministic.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# The raised learning rate: stage 1 ends at lr 1e-3, the finetune starts
# at 0.2 (NOTE: mmdet's RetinaNet: 0.01 at batch 16) after a 50-iteration
# warm-up, gradients clipped at norm 10 (mmdet's RetinaNet: no clipping) so
# that it does not diverge (at 0.5 it did, even clipped at 35), x0.1 for
# the last epoch. NOTE: weight decay 1e-2 (mmdet: 1e-4) compresses the
# paper's 90k iterations of decay into 256: lr x decay x iterations is
# 0.2 x 1e-2 x 256 = 0.51 here, 0.01 x 1e-4 x 90k = 0.09 in the paper's
# schedule (weight decay is what revives a dead psBN channel).
max_epochs = 4
optim_wrapper = dict(
    optimizer=dict(lr=0.2, weight_decay=1e-2),
    clip_grad=dict(max_norm=10, norm_type=2))
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[max_epochs - 1])
]
default_hooks = dict(
    logger=dict(interval=16),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
custom_hooks = [dict(type='CollapseMonitorHook', interval=32)]
