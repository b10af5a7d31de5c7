# ResNet-20, BN + ReLU, fitting random labels (paper §3.3): every training
# image gets a fixed random label (seeded, the same in every epoch and
# process); 9 x 100 epochs of cosine restarts. Validation reports accuracy
# against the true test labels (chance: 10 %); the collapse measures are
# the point of this run.
_base_ = './resnet20_bn_restart9x100.py'
train_dataloader = dict(dataset=dict(random_labels=True, random_label_seed=0))
