# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""psbn_cifar.registry: one child of each of mmengine's root registries."""
import mmengine.registry as root
import pytest

from psbn_cifar import registry

NAMES = [n for n in registry.__all__ if n != 'SCOPE']


@pytest.mark.parametrize('name', NAMES)
def test_each_registry_is_the_scoped_child_of_its_namesake(name):
    child, parent = getattr(registry, name), getattr(root, name)
    assert child.parent is parent
    assert child.scope == registry.SCOPE == 'psbn_cifar'
    assert child.name == parent.name


def test_every_root_registry_has_a_child():
    roots = {
        n
        for n, r in vars(root).items()
        if isinstance(r, root.Registry) and r.scope == 'mmengine'
    }
    assert roots == set(NAMES)
