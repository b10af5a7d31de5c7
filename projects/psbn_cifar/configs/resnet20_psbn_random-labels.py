# ResNet-20, psBN + ReLU, fitting random labels (paper §3.3); see
# resnet20_bn_random-labels.py.
_base_ = './resnet20_psbn_restart9x100.py'
train_dataloader = dict(dataset=dict(random_labels=True, random_label_seed=0))
