# Moved to projects/psbn_cifar/configs/ (same name); kept here so that
# commands written with this path keep working.
_base_ = ('../../projects/psbn_cifar/configs/'
          'resnet20_bn-lrelu_restart9x100.py')
