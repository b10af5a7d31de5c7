# Faster R-CNN R50-FPN, COCO 2017, scale 800 (1333x800), 1x, with psBN in the
# backbone (the FPN and the heads have no norm layer); configs/
# faster-rcnn_r50_fpn_bn.py with only the backbone's norm type changed.
#
#   COCO 2017 val bbox AP:   not run here (no GPU, no COCO)
#     mmdet model zoo, BN baseline   37.4
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.02:
#   tools/dist_train.sh configs/faster-rcnn_r50_fpn_psbn.py 8
# On another number of GPUs add --auto-scale-lr (base_batch_size 16).
_base_ = './faster-rcnn_r50_fpn_bn.py'

model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
