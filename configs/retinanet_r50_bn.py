# RetinaNet-R50-FPN, COCO 2017, scale 800 (1333x800), 1x: the BN baseline of
# configs/retinanet_r50_psbn.py. Identical to mmdet's
# retinanet_r50_fpn_1x_coco.py but for the collapse monitor and where the
# ImageNet weights come from, so filter collapse can be compared with psBN.
#
#   COCO 2017 val bbox AP, this setting with BN:
#     psBN paper (Zhou et al. 2020)   35.8   (psBN: 36.4)
#     RetinaNet paper (Lin et al. 2017)        35.7
#     mmdet model zoo, R50 1x                  36.5
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.01 (mmdet's setting).
# auto_scale_lr.base_batch_size is 16: on another number of GPUs pass
# --auto-scale-lr and the lr becomes 0.01 * (GPUs x 2) / 16.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_psbn'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        # The ImageNet ResNet-50 the paper finetunes from: torchvision's
        # IMAGENET1K_V1 weights, i.e. what mmdet's 'torchvision://resnet50'
        # names, by URL so that torchvision need not be installed. It is read
        # from $TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth when there
        # (downloaded there otherwise); or pass a local file with
        # --cfg-options model.backbone.init_cfg.checkpoint=/path/to.pth
        init_cfg=dict(checkpoint='https://download.pytorch.org/models/'
                      'resnet50-0676ba61.pth')))

# The collapse monitor: collapsed/dead channels and FLOP sparsity every 50
# iterations and each epoch, a report and plots in <work_dir>/collapse/.
custom_hooks = [dict(type='CollapseMonitorHook', interval=50)]
