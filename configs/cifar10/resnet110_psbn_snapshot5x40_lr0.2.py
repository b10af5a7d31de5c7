# Moved to projects/psbn_cifar/configs/ (same name); kept here so that
# commands written with this path keep working.
_base_ = ('../../projects/psbn_cifar/configs/'
          'resnet110_psbn_snapshot5x40_lr0.2.py')
