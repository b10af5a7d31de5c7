# Faster R-CNN R50-FPN, COCO 2017, scale 800 (1333x800), 1x: the BN baseline
# of configs/faster-rcnn_r50_fpn_psbn.py. Identical to mmdet's
# faster-rcnn_r50_fpn_1x_coco.py but for the collapse monitor and where the
# ImageNet weights come from (as configs/retinanet_r50_bn.py).
#
#   COCO 2017 val bbox AP:
#     mmdet model zoo, faster-rcnn_r50_fpn_1x_coco   37.4
#     this config and faster-rcnn_r50_fpn_psbn.py: not run here (no GPU,
#     no COCO)
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.02 (mmdet's setting).
# auto_scale_lr.base_batch_size is 16: on another number of GPUs pass
# --auto-scale-lr and the lr becomes 0.02 * (GPUs x 2) / 16.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_psbn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        # torchvision's IMAGENET1K_V1 weights (mmdet's
        # 'torchvision://resnet50') by URL, as configs/retinanet_r50_bn.py:
        # read from $TORCH_HOME/hub/checkpoints/ when there.
        init_cfg=dict(checkpoint='https://download.pytorch.org/models/'
                      'resnet50-0676ba61.pth')))

# The collapse monitor: collapsed/dead channels and FLOP sparsity every 50
# iterations and each epoch, a report and plots in <work_dir>/collapse/.
custom_hooks = [dict(type='CollapseMonitorHook', interval=50)]
