# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""What ``import mmdet_psbn`` loads and registers, in a fresh interpreter.

Every detection config imports the package through ``custom_imports``, so
it must stay the small core: the norm layers, the collapse analysis, the
monitor hook and the upstream fixes; nothing generic in mmengine's root
registries.
"""
import json
import subprocess
import sys

import pytest

#: What a fresh ``import mmdet_psbn`` must not load.
NOT_LOADED = ('matplotlib', 'scipy', 'psbn_cifar', 'collapse_lab',
              'mmdet_psbn.datasets', 'mmdet_psbn.utils', 'mlxtend', 'pandas',
              'sklearn', 'mmdet')

#: The only names it may add to mmengine's root registries: the post-shifted
#: norm layers (mmcv's names with ``ps`` in front) and the monitor.
REGISTERED = {
    'model': {
        'psBN', 'psBN1d', 'psBN2d', 'psBN3d', 'psSyncBN', 'psGN', 'psIN',
        'psIN1d', 'psIN2d', 'psIN3d'
    },
    'hook': {'CollapseMonitorHook'}
}

PROBE = r'''
import json, sys
import mmengine.registry as registry
import mmcv.cnn  # mmcv's bricks: registered before, so not counted
def names():
    return {r.name: set(r.module_dict) for r in vars(registry).values()
            if isinstance(r, registry.Registry)}
before = names()
import mmdet_psbn
added = {k: sorted(v - before.get(k, set())) for k, v in names().items()
         if v - before.get(k, set())}
print(json.dumps(dict(modules=sorted(sys.modules), added=added)))
'''


@pytest.fixture(scope='module')
def fresh_import():
    out = subprocess.run([sys.executable, '-c', PROBE],
                         check=True,
                         capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize('name', NOT_LOADED)
def test_import_does_not_load(fresh_import, name):
    loaded = [
        m for m in fresh_import['modules']
        if m == name or m.startswith(name + '.')
    ]
    assert not loaded, f'import mmdet_psbn loaded {loaded[:5]}'


def test_import_registers_only_the_layers_and_the_hook(fresh_import):
    added = {k: set(v) for k, v in fresh_import['added'].items()}
    assert added == REGISTERED


def test_the_probe_sees_what_it_looks_for():
    # The probe itself must be able to fail: importing the CIFAR project
    # loads it and registers its names in the psbn_cifar scope only.
    probe = PROBE.replace('import mmdet_psbn\n', 'import psbn_cifar\n')
    out = subprocess.run([sys.executable, '-c', probe],
                         check=True,
                         capture_output=True,
                         text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert 'psbn_cifar' in result['modules']
    assert {k: set(v) for k, v in result['added'].items()} == REGISTERED
