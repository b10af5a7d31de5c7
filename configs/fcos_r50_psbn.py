# FCOS-R50-FPN, COCO 2017, scale 800 (1333x800), 1x, with psBN in the
# backbone and psGN (GroupNorm post-shifted the same way) in the head;
# configs/fcos_r50_bn.py with only the norm types changed.
#
#   COCO 2017 val bbox AP:   not run here (no GPU, no COCO)
#     mmdet model zoo, caffe-style BN baseline   36.6
#
# The ImageNet BN weights load function-preservingly (bias := bias - alpha),
# so training starts from the very same backbone as the BN baseline.
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.01:
#   tools/dist_train.sh configs/fcos_r50_psbn.py 8
# On another number of GPUs add --auto-scale-lr (base_batch_size 16).
_base_ = './fcos_r50_bn.py'

model = dict(
    backbone=dict(norm_cfg=dict(type='psBN')),
    bbox_head=dict(norm_cfg=dict(type='psGN')))
