# Stage 1 of `make demo` (tools/misc/demo.py): the stand-in for ImageNet
# pretraining. A BN RetinaNet-R18-FPN trained from scratch on the demo's toy
# set (256 train / 64 val images of 128 px), at lr 0.01; stage 2
# (retinanet_r18_psbn_toy_finetune.py) finetunes it at lr 0.02.
#   python tools/misc/make_toy_coco.py data/toy_coco_demo \
#       --num-train 256 --num-val 64
#   python tools/train.py configs/toy/retinanet_r18_fpn_toy_pretrain.py \
#       --work-dir work_dirs/demo/pretrain
# What differs from mmdet's RetinaNet, so that a few CPU minutes learn
# something: ResNet-18; BN layers train (norm_eval=False, nothing frozen)
# and the residual BNs start at gamma=1 (zero_init_residual=False), as for
# torchvision's ImageNet weights; GroupNorm in the head; anchors half the
# size (16-25 px at stride 8), for the toy's 20-56 px objects; gradient
# clipping.
_base_ = './retinanet_r50_fpn_toy.py'

data_root = 'data/toy_coco_demo/'
model = dict(
    backbone=dict(
        depth=18, norm_eval=False, frozen_stages=-1, zero_init_residual=False),
    neck=dict(in_channels=[64, 128, 256, 512]),
    bbox_head=dict(
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        anchor_generator=dict(octave_base_scale=2)))

# NOTE: batch 4 on one process: 256 images = 64 iterations an epoch.
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# SGD lr 0.01, momentum 0.9, weight decay 1e-4 (mmdet's), clipped gradients.
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
train_cfg = dict(max_epochs=8, val_interval=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=8, by_epoch=True, milestones=[7])
]
default_hooks = dict(
    logger=dict(interval=16), checkpoint=dict(interval=8, max_keep_ckpts=1))
randomness = dict(seed=0)
# Collapse in the pretraining itself (BN, from scratch, weight decay).
custom_hooks = [dict(type='CollapseMonitorHook', interval=32)]
