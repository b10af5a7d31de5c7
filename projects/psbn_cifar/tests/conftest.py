# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Fixtures of the CIFAR tests: a toy CIFAR-10-format root."""
import pytest


@pytest.fixture(scope='session')
def toy_cifar(tmp_path_factory):
    """200 train / 100 test images in the official python-batch format."""
    from psbn_cifar.datasets.cifar import make_toy_cifar
    return make_toy_cifar(str(tmp_path_factory.mktemp('data') / 'cifar'),
                          num_train=200, num_test=100)
