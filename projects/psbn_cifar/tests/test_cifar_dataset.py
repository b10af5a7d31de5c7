# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR-10 from python batches, the toy root, random labels, transforms."""
import os
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from psbn_cifar.datasets.cifar import (BASE_FOLDER, CIFARDataError,
                                       load_cifar_split, make_toy_cifar,
                                       random_labels)
from psbn_cifar.registry import DATASETS
from tests.conftest import run_tool


def read_batch(root, name, encoding='latin1'):
    """As mmpretrain's and torchvision's CIFAR10 read the official batches
    (``pickle.load(f, encoding='latin1')``, keys ``'data'``...)."""
    with open(osp.join(root, BASE_FOLDER, name), 'rb') as f:
        return pickle.load(f, encoding=encoding)


def test_toy_set_reads_as_the_official_archive_does(toy_cifar):
    # latin1 (mmpretrain, torchvision): str keys; bytes: bytes keys, as the
    # official archive (pickled by Python 2) gives under each.
    for name in ('data_batch_1', 'test_batch'):
        text, raw = read_batch(toy_cifar,
                               name), read_batch(toy_cifar, name, 'bytes')
        assert {'data', 'labels', 'batch_label'} <= set(text)
        assert {b'data', b'labels', b'batch_label'} <= set(raw)
        np.testing.assert_array_equal(text['data'], raw[b'data'])
        assert text['data'].dtype == np.uint8
        assert text['data'].shape[1] == 3072
    meta = read_batch(toy_cifar, 'batches.meta')
    assert meta['label_names'][0] == 'airplane'
    assert read_batch(toy_cifar, 'batches.meta',
                      'bytes')[b'label_names'][0] == b'airplane'


def test_reader_reads_python3_pickles_too(tmp_path, toy_cifar):
    # A root written by Python 3 with bytes keys (our toy set before) or
    # with str keys reads the same as the Python-2-style one.
    images, labels, classes = load_cifar_split(toy_cifar, test_mode=True)
    for to_key in (str.encode, str):
        folder = tmp_path / f'{to_key.__name__}' / BASE_FOLDER
        folder.mkdir(parents=True)
        for name in ('test_batch', 'batches.meta'):
            entry = read_batch(toy_cifar, name)
            entry = {to_key(k): v for k, v in entry.items()}
            with open(folder / name, 'wb') as f:
                pickle.dump(entry, f)
        got = load_cifar_split(str(folder.parent), test_mode=True)
        np.testing.assert_array_equal(got[0], images)
        np.testing.assert_array_equal(got[1], labels)
        assert got[2] == classes


def test_reads_the_official_format(toy_cifar):
    train = DATASETS.build(dict(type='CIFAR10', data_root=toy_cifar))
    test = DATASETS.build(
        dict(type='CIFAR10', data_root=toy_cifar, test_mode=True))
    assert (len(train), len(test)) == (200, 100)
    assert train.metainfo['classes'][0] == 'airplane'
    # Image 0 of data_batch_2 is item 40: its R, G, B planes, row-major.
    raw = read_batch(toy_cifar, 'data_batch_2')
    item = train[40]
    assert item['gt_label'] == raw['labels'][0]
    np.testing.assert_array_equal(item['img'][..., 0].ravel(),
                                  raw['data'][0, :1024])
    np.testing.assert_array_equal(item['img'][..., 2].ravel(),
                                  raw['data'][0, 2048:])
    assert item['img'].shape == (32, 32, 3) and item['sample_idx'] == 40
    raw = read_batch(toy_cifar, 'test_batch')
    np.testing.assert_array_equal(test.gt_labels, raw['labels'])


def test_toy_root_is_deterministic_and_never_overwrites_real_data(tmp_path):
    a = make_toy_cifar(str(tmp_path / 'a'), num_train=20, num_test=5)
    b = make_toy_cifar(str(tmp_path / 'b'), num_train=20, num_test=5)
    for name in ('data_batch_1', 'data_batch_5', 'test_batch'):
        x, y = read_batch(a, name), read_batch(b, name)
        np.testing.assert_array_equal(x['data'], y['data'])
        assert x['labels'] == y['labels']
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]
    real = tmp_path / 'real' / BASE_FOLDER
    real.mkdir(parents=True)
    with pytest.raises(FileExistsError, match='not a toy set'):
        make_toy_cifar(str(tmp_path / 'real'))
    proc = run_tool(['tools/misc/make_toy_cifar.py', str(tmp_path / 'real')])
    assert proc.returncode == 2, proc.stdout
    assert 'make_toy_cifar.py: error: ' in proc.stdout
    assert 'not a toy set' in proc.stdout


def test_missing_data_says_where_to_put_it(tmp_path):
    root = str(tmp_path / 'nowhere')
    with pytest.raises(CIFARDataError) as err:
        DATASETS.build(dict(type='CIFAR10', data_root=root))
    msg = str(err.value)
    assert root in msg and 'cifar-10-batches-py' in msg
    assert 'data_batch_1' in msg
    assert f'tools/misc/make_toy_cifar.py {root}' in msg


def test_train_tool_reports_missing_batches(tmp_path):
    """A data root without the batches: the train tool stops with the
    dataset's message, no traceback."""
    from cifar_test_utils import write_cifar_config
    empty = tmp_path / 'empty'
    empty.mkdir()
    cfg = write_cifar_config(tmp_path / 'cfg.py', str(empty),
                             'resnet20_bn_restart9x100.py')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')])
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert 'cifar-10-batches-py' in proc.stdout
    assert 'make_toy_cifar.py' in proc.stdout
    assert 'Traceback' not in proc.stdout


def test_train_tool_reports_a_corrupt_batch(tmp_path, toy_cifar):
    """A batch file that is not a pickle: found only when the Runner builds
    the dataset, and still one line and exit status 2 (CIFARDataError is a
    DataError), the file untouched."""
    import shutil

    from cifar_test_utils import write_cifar_config
    root = tmp_path / 'broken'
    shutil.copytree(toy_cifar, root)
    batch = root / BASE_FOLDER / 'data_batch_3'
    batch.write_bytes(b'not a pickle at all')
    cfg = write_cifar_config(tmp_path / 'cfg.py', str(root),
                             'resnet20_bn_restart9x100.py')
    proc = run_tool(['tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')])
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert 'train.py: error:' in proc.stdout
    assert 'data_batch_3' in proc.stdout and 'not a CIFAR-10' in proc.stdout
    assert 'Traceback' not in proc.stdout
    assert batch.read_bytes() == b'not a pickle at all'


def test_random_labels_fixed_and_differ_from_truth(toy_cifar):
    cfg = dict(type='CIFAR10', data_root=toy_cifar, random_labels=True)
    ds1, ds2 = DATASETS.build(cfg), DATASETS.build(cfg)
    true = DATASETS.build(dict(type='CIFAR10', data_root=toy_cifar)).gt_labels
    # The same labels from two builds and in every "epoch" (re-reads).
    np.testing.assert_array_equal(ds1.gt_labels, ds2.gt_labels)
    np.testing.assert_array_equal(ds1.gt_labels, ds1.gt_labels)
    assert [ds1[i]['true_label'] for i in range(len(ds1))] == list(true)
    assert (ds1.gt_labels != true).mean() > 0.75  # ~0.9 expected
    assert set(ds1.gt_labels) == set(range(10))
    other = DATASETS.build(dict(cfg, random_label_seed=1))
    assert (other.gt_labels != ds1.gt_labels).mean() > 0.75
    # Another process (another hash seed, fresh numpy state) agrees.
    code = ('import sys, numpy as np; np.random.seed(123);'
            'from psbn_cifar.registry import DATASETS;'
            f'd = DATASETS.build({cfg!r});'
            'sys.stdout.write(",".join(map(str, d.gt_labels)))')
    out = subprocess.run([sys.executable, '-c', code],
                         check=True,
                         capture_output=True,
                         text=True,
                         env=dict(os.environ, PYTHONHASHSEED='7')).stdout
    assert out.strip().split(',')[-200:] == [str(v) for v in ds1.gt_labels]


def test_random_labels_function():
    a = random_labels(1000, 10, 0)
    np.testing.assert_array_equal(a, random_labels(1000, 10, 0))
    assert a.min() == 0 and a.max() == 9
    assert 60 < np.bincount(a).min()


def test_standard_augmentation(toy_cifar):
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('psbn_cifar'):  # the configs'
        pipeline = Compose([
            dict(type='RandomCrop', crop_size=32, padding=4),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs')
        ])
    ds = DATASETS.build(dict(type='CIFAR10', data_root=toy_cifar))
    info = ds.get_data_info(3)
    img = info['img']
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
    seen = set()
    np.random.seed(0)
    for _ in range(40):
        out = pipeline(dict(info))
        x = out['inputs'].permute(1, 2, 0).numpy()
        assert out['inputs'].dtype == torch.uint8 and x.shape == (32, 32, 3)
        flip = out['data_samples'].flip
        x = x[:, ::-1] if flip else x
        offsets = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(padded[dy:dy + 32, dx:dx + 32], x)]
        assert offsets, 'not a crop of the 4-pixel padded image'
        seen.add((offsets[0], flip))
        assert out['data_samples'].gt_label.tolist() == [info['gt_label']]
    assert len(seen) > 10 and {f for _, f in seen} == {True, False}
