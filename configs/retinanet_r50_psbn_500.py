# RetinaNet-R50-FPN, COCO 2017, scale 500 (833x500), 1x, with psBN in the
# backbone (Zhou et al. 2020).
#
#   COCO 2017 val bbox AP:   psBN 33.4
#                            BN   32.7 (configs/retinanet_r50_bn_500.py)
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.01:
#   tools/dist_train.sh configs/retinanet_r50_psbn_500.py 8
# On another number of GPUs add --auto-scale-lr (base_batch_size 16).
_base_ = './retinanet_r50_bn_500.py'

model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
