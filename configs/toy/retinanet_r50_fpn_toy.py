# The smallest real end-to-end run: mmdet's RetinaNet-R50-FPN, trained and
# evaluated (pycocotools) on the generated toy COCO set at 128x128.
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/retinanet_r50_fpn_toy.py
# Everything else is mmdet's retinanet_r50_fpn_1x_coco.py.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_psbn'], allow_failed_imports=False)

data_root = 'data/toy_coco/'
metainfo = dict(
    classes=('square', 'circle', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0)])
img_scale = (128, 128)

model = dict(
    # No ImageNet weights: nothing may be downloaded here.
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
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
# NOTE: batch 2 on one process; num_workers=0 keeps CPU runs deterministic.
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# NOTE: 64 images / batch 2 = 32 iterations an epoch, ~8 s on 2 CPU cores.
train_cfg = dict(max_epochs=12, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(
        type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[9, 11])
]
default_hooks = dict(
    logger=dict(interval=8), checkpoint=dict(interval=4, max_keep_ckpts=1))
