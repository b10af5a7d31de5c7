# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Fixtures of the CIFAR tests: a toy CIFAR-10-format root, and the
project's scope around every test."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(scope='session')
def toy_cifar(tmp_path_factory):
    """200 train / 100 test images in the official python-batch format."""
    from psbn_cifar.datasets.cifar import make_toy_cifar
    return make_toy_cifar(
        str(tmp_path_factory.mktemp('data') / 'cifar'),
        num_train=200,
        num_test=100)


@pytest.fixture(autouse=True)
def psbn_cifar_scope():
    """``default_scope = 'psbn_cifar'``, as the project's configs set.

    An mmengine registry builds in the current default scope, so without
    it a test would depend on what an earlier test made current (the
    detection tests leave ``mmdet``), as a script would on its config.
    """
    with DefaultScope.overwrite_default_scope('psbn_cifar'):
        yield
