# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Install with ``make install`` (it builds mmcv with ops first).

``pip install -e .`` alone installs only this package and its light
runtime requirements; mmengine, mmcv and mmdet are listed in
``requirements/mminstall.txt`` because mmcv must be built against the torch
you already have (see README, "Install").
"""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version():
    scope = {}
    with open(osp.join(HERE, 'mmdet_psbn', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname):
    """Read a requirements file, skipping comments and ``-r`` includes."""
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line and not line.startswith('-'):
                reqs.append(line)
    return reqs


setup(
    name='mmdet-psbn',
    version=get_version(),
    description='Post-shifted BatchNorm (psBN) against filter collapse, '
    'as an OpenMMLab / MMDetection 3.x plugin',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(
        osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    keywords='computer vision, object detection, batch normalization',
    # The core, and the CIFAR-10 project (projects/psbn_cifar) as the
    # top-level package ``psbn_cifar``, so its configs' custom_imports work
    # from any working directory, mmdet's and mmpretrain's tools included.
    packages=find_packages(include=('mmdet_psbn', 'mmdet_psbn.*')) +
    find_packages(
        'projects/psbn_cifar', include=('psbn_cifar', 'psbn_cifar.*')),
    package_dir={'psbn_cifar': 'projects/psbn_cifar/psbn_cifar'},
    python_requires='>=3.8',
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        'mim': parse_requirements('requirements/mminstall.txt'),
        'tests': parse_requirements('requirements/tests.txt'),
    },
    license='Apache License 2.0',
    zip_safe=False)
