# FCOS-R50-FPN (GN head), COCO 2017, scale 800 (1333x800), 1x: the BN
# baseline of configs/fcos_r50_psbn.py. mmdet's
# fcos_r50-caffe_fpn_gn-head_1x_coco.py with the pytorch-style ImageNet
# ResNet-50 of our RetinaNet configs in place of the caffe-style one, and the
# collapse monitor.
#
#   COCO 2017 val bbox AP:
#     mmdet model zoo, fcos_r50-caffe_fpn_gn-head_1x_coco   36.6
#       (caffe-style backbone with frozen BN: not this exact setting)
#     this config (BN) and fcos_r50_psbn.py: not run here (no GPU, no COCO)
#
# Why not mmdet's caffe backbone: its BN is frozen whole
# (requires_grad=False, norm_eval=True), so gamma never moves and no filter
# can collapse. As in mmdet's pytorch-style R50 detectors (RetinaNet,
# Faster R-CNN) and configs/retinanet_r50_bn.py, the statistics stay frozen
# (norm_eval=True) and gamma and beta train under weight decay
# (requires_grad=True): the finetuning where collapse happens.
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.01 (mmdet's setting).
# auto_scale_lr.base_batch_size is 16: on another number of GPUs pass
# --auto-scale-lr and the lr becomes 0.01 * (GPUs x 2) / 16.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['mmdet_psbn'], allow_failed_imports=False)

model = dict(
    # torchvision's ImageNet normalization (RGB), not caffe's (BGR).
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        # torchvision's IMAGENET1K_V1 weights, as configs/retinanet_r50_bn.py
        # (read from $TORCH_HOME/hub/checkpoints/ when there).
        init_cfg=dict(checkpoint='https://download.pytorch.org/models/'
                      'resnet50-0676ba61.pth')),
    # FCOSHead's default, written out so that the psGN config changes only
    # its type.
    bbox_head=dict(
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))

# The collapse monitor: collapsed/dead channels and FLOP sparsity every 50
# iterations and each epoch, a report and plots in <work_dir>/collapse/.
custom_hooks = [dict(type='CollapseMonitorHook', interval=50)]
