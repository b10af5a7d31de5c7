# Stage 2 of `make demo` with psBN: retinanet_r18_digits_bn_finetune.py with
# psBN in the backbone. Stage 1's BN weights load function-preservingly
# (bias := bias - alpha), so both finetunes start from the same network.
#   python tools/train.py configs/demo/retinanet_r18_digits_psbn_finetune.py \
#       --work-dir work_dirs/demo/finetune_psbn
_base_ = './retinanet_r18_digits_bn_finetune.py'

model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
