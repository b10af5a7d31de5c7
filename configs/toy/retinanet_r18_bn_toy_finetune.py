# Stage 2 of `make demo` with BN: the BN baseline of
# retinanet_r18_psbn_toy_finetune.py (tools/misc/demo.py --with-bn runs it).
# The stage 1 detector finetuned at twice its learning rate, the backbone
# set up as in mmdet's RetinaNet (norm_eval=True: BN statistics frozen;
# frozen_stages=1: stem and layer1 frozen), with the collapse monitor on.
#   python tools/train.py configs/toy/retinanet_r18_bn_toy_finetune.py \
#       --work-dir work_dirs/demo/finetune_bn \
#       --cfg-options load_from=work_dirs/demo/pretrain/epoch_8.pth
_base_ = './retinanet_r18_fpn_toy_pretrain.py'

model = dict(backbone=dict(norm_eval=True, frozen_stages=1))
# Where tools/misc/demo.py's stage 1 leaves its checkpoint.
load_from = 'work_dirs/demo/pretrain/epoch_8.pth'

optim_wrapper = dict(optimizer=dict(lr=0.02))
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3])
]
default_hooks = dict(checkpoint=dict(interval=4))
custom_hooks = [dict(type='CollapseMonitorHook', interval=32)]
