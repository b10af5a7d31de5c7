# Stage 2 of `make demo`: the stage 1 BN detector finetuned with psBN in the
# backbone at twice stage 1's learning rate, with the collapse monitor on;
# the toy mirror of configs/retinanet_r50_psbn.py (ImageNet BN weights,
# finetuned as a detector). The BN checkpoint loads function-preservingly
# (bias := bias - alpha), so training starts from stage 1's very network.
#   python tools/train.py configs/toy/retinanet_r18_psbn_toy_finetune.py \
#       --work-dir work_dirs/demo/finetune_psbn \
#       --cfg-options load_from=work_dirs/demo/pretrain/epoch_8.pth
_base_ = './retinanet_r18_bn_toy_finetune.py'

model = dict(backbone=dict(norm_cfg=dict(type='psBN')))
