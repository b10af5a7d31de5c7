# RetinaNet-R50-FPN, COCO 2017, scale 500 (833x500), 1x: the BN baseline of
# configs/retinanet_r50_psbn_500.py; configs/retinanet_r50_bn.py at the
# smaller scale.
#
#   COCO 2017 val bbox AP, this setting with BN:
#     psBN paper (Zhou et al. 2020)   32.7   (psBN: 33.4)
#     RetinaNet paper (Lin et al. 2017)        32.5
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.01, as at scale 800
# (--auto-scale-lr on another number of GPUs; base_batch_size 16).
_base_ = './retinanet_r50_bn.py'

img_scale = (833, 500)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
