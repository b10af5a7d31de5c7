# RetinaNet-R50-FPN, COCO 2017, scale 800 (1333x800), 1x, with psBN in the
# backbone: the paper's detection experiment (Zhou et al. 2020).
#
#   COCO 2017 val bbox AP:   psBN 36.4
#                            BN   35.8 (configs/retinanet_r50_bn.py)
#
# psBN loads the plain-BN ImageNet weights function-preservingly
# (bias := bias - alpha), so training starts from the very same network as
# the BN baseline; only weight decay's pull differs.
#
# NOTE: 8 GPUs x 2 images = batch 16 at lr 0.01:
#   tools/dist_train.sh configs/retinanet_r50_psbn.py 8
# On another number of GPUs add --auto-scale-lr (base_batch_size 16).
_base_ = './retinanet_r50_bn.py'

model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
