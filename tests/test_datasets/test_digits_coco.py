# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The real-digit data sets: COCO layout read by pycocotools and mmdet,
tight boxes, train and val from disjoint digits, the same bytes for the same
arguments, atomic writes, clear errors."""
import filecmp
import json
import os
import pickle

import numpy as np
import pytest
from pycocotools.coco import COCO

from mmdet_psbn.datasets import DIGIT_CLASSES
from mmdet_psbn.datasets import digits_coco as digits_module
from mmdet_psbn.datasets import make_digits_coco
from mmdet_psbn.datasets.mnist_digits import load_mnist_digits
from ..conftest import REPO, run_tool


@pytest.fixture(scope='module')
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits') / 'coco'
    make_digits_coco(str(root), num_train=8, num_val=4)
    return root


def _same_tree(a, b):
    cmp = filecmp.dircmp(a, b)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in cmp.common_dirs:
        names = os.listdir(a / sub)
        match, mismatch, errors = filecmp.cmpfiles(
            a / sub, b / sub, names, shallow=False)
        assert not mismatch and not errors and len(match) == len(names)


def test_layout_is_coco_with_ten_digit_classes(digits_root):
    for split, n in (('train', 8), ('val', 4)):
        coco = COCO(
            str(digits_root / 'annotations' / f'instances_{split}2017.json'))
        assert len(coco.getImgIds()) == n
        assert tuple(c['name'] for c in coco.loadCats(
            coco.getCatIds())) == DIGIT_CLASSES == tuple('0123456789')
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= n  # at least one digit an image
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            assert 20 - 2 <= h <= 48  # the ink height, trimmed at the edge
            assert 0 < ann['area'] <= w * h
        for img in coco.loadImgs(coco.getImgIds()):
            assert (digits_root / f'{split}2017' / img['file_name']).is_file()


def test_mmdet_coco_dataset_reads_it(digits_root):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    ds = CocoDataset(
        data_root=str(digits_root) + '/',
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        metainfo=dict(classes=DIGIT_CLASSES),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True)
        ])
    assert len(ds) == 4
    item = ds[0]
    assert item['img'].shape == (128, 128, 3)
    assert len(item['gt_bboxes']) >= 1
    assert set(item['gt_bboxes_labels'].tolist()) <= set(range(10))


def test_train_and_val_digits_are_disjoint(digits_root):
    train_imgs, _ = load_mnist_digits('train')
    test_imgs, test_labels = load_mnist_digits('test')
    used = {}
    for split, source in (('train', 'train'), ('val', 'test')):
        with open(digits_root / 'annotations' /
                  f'instances_{split}2017.json') as f:
            anns = json.load(f)['annotations']
        assert {a['digit_split'] for a in anns} == {source}
        pool = train_imgs if source == 'train' else test_imgs
        used[split] = {pool[a['digit_index']].tobytes() for a in anns}
        if source == 'test':  # the label is the source digit's
            assert all(a['category_id'] == test_labels[a['digit_index']] + 1
                       for a in anns)
    assert used['train'] and used['val']
    assert not used['train'] & used['val']
    # The splits share no digit at all, not only none of these.
    assert not ({d.tobytes()
                 for d in train_imgs}
                & {d.tobytes()
                   for d in test_imgs})


def test_boxes_are_tight_around_the_ink():
    digits, labels = load_mnist_digits('test')
    rng = np.random.RandomState(5)
    for _ in range(10):
        _, anns, ink = digits_module.draw_canvas(
            rng,
            digits,
            labels,
            'test',
            image_size=96,
            max_objects=4,
            min_size=12,
            max_size=40)
        covered = np.zeros_like(ink)
        for ann in anns:
            x, y, w, h = ann['bbox']
            box = ink[y:y + h, x:x + w]
            # Ink on every edge of the box.
            assert box[0].any() and box[-1].any()
            assert box[:, 0].any() and box[:, -1].any()
            assert ann['area'] == box.sum()
            covered[y:y + h, x:x + w] = True
        assert not (ink & ~covered).any()  # no ink outside the boxes


def test_digits_are_visible_in_pixels(digits_root):
    """The ink contrasts with the background around it."""
    import cv2
    coco = COCO(str(digits_root / 'annotations' / 'instances_train2017.json'))
    for info in coco.loadImgs(coco.getImgIds()):
        img = cv2.imread(str(digits_root / 'train2017' /
                             info['file_name'])).astype(float)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=info['id'])):
            x, y, w, h = ann['bbox']
            grey = img[y:y + h, x:x + w].mean(2)
            assert np.ptp(grey) > 60


def test_same_arguments_same_bytes_and_no_op(tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    make_digits_coco(str(a), num_train=3, num_val=2, seed=3)
    make_digits_coco(str(b), num_train=3, num_val=2, seed=3)
    _same_tree(a, b)
    make_digits_coco(str(c), num_train=3, num_val=2, seed=4)
    assert not filecmp.cmp(
        a / 'train2017' / '000000000001.png',
        c / 'train2017' / '000000000001.png',
        shallow=False)
    img = a / 'train2017' / '000000000001.png'
    mtime = img.stat().st_mtime_ns
    make_digits_coco(str(a), num_train=3, num_val=2, seed=3)
    assert img.stat().st_mtime_ns == mtime
    make_digits_coco(str(a), num_train=4, num_val=2, seed=3)
    assert len(os.listdir(a / 'train2017')) == 4


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_imwrite(path, img):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return True

    monkeypatch.setattr(digits_module.cv2, 'imwrite', failing_imwrite)
    with pytest.raises(KeyboardInterrupt):
        make_digits_coco(str(tmp_path / 'digits'), num_train=4, num_val=2)
    assert os.listdir(tmp_path) == []


def test_a_rebuild_that_fails_keeps_the_old_set(tmp_path, monkeypatch):
    root = tmp_path / 'digits'
    make_digits_coco(str(root), num_train=2, num_val=1)
    before = sorted(os.listdir(root / 'train2017'))
    monkeypatch.setattr(digits_module.cv2, 'imwrite', lambda path, img: False)
    with pytest.raises(OSError, match='could not write'):
        make_digits_coco(str(root), num_train=3, num_val=1)
    assert sorted(os.listdir(root / 'train2017')) == before
    assert sorted(os.listdir(tmp_path)) == ['digits']


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_train=0), 'num_train must be an integer >= 1, got 0'),
    (dict(num_val=2.5), 'num_val must be an integer'),
    (dict(min_size=40, max_size=30), 'min_size <= max_size'),
    (dict(max_size=80), r'max_size <= image_size // 2'),
    (dict(max_objects=0), 'max_objects'),
])
def test_bad_arguments_say_what_is_wrong(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_digits_coco(str(tmp_path / 'x'), **kwargs)
    assert not (tmp_path / 'x').exists()


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('user data')
    with pytest.raises(FileExistsError, match='not a digits COCO set'):
        make_digits_coco(str(tmp_path / 'mine'), num_train=1, num_val=1)
    assert (tmp_path / 'mine' / 'keep.txt').read_text() == 'user data'


def test_cifar_format_set_reads_with_cifar10(tmp_path):
    from psbn_cifar.datasets import CIFAR10, make_digits_cifar
    root = tmp_path / 'cls'
    make_digits_cifar(str(root), num_train=20, num_test=10)
    train = CIFAR10(data_root=str(root))
    test = CIFAR10(data_root=str(root), test_mode=True)
    assert (len(train), len(test)) == (20, 10)
    assert train.metainfo['classes'] == DIGIT_CLASSES
    assert train.images.shape == (20, 32, 32, 3)
    assert set(test.gt_labels.tolist()) <= set(range(10))
    # Deterministic, and a second call is a no-op.
    other = tmp_path / 'cls2'
    make_digits_cifar(str(other), num_train=20, num_test=10)
    _same_tree(root, other)
    with pytest.raises(ValueError, match='num_train must be <= 4000'):
        make_digits_cifar(str(tmp_path / 'big'), num_train=4001)
    # Read as mmpretrain and torchvision read the official archive.
    with open(root / 'cifar-10-batches-py' / 'test_batch', 'rb') as f:
        labels = pickle.load(f, encoding='latin1')['labels']
    assert len(labels) == 10


def test_cli_writes_the_sets_and_reports_errors(tmp_path):
    tool = 'tools/misc/make_digits_coco.py'
    proc = run_tool(
        [tool, tmp_path / 'd', '--num-train', '2', '--num-val', '1'])
    assert proc.returncode == 0, proc.stdout
    assert 'digits COCO set' in proc.stdout
    assert (tmp_path / 'd' / 'annotations' /
            'instances_val2017.json').is_file()
    proc = run_tool(
        [tool, tmp_path / 'e', '--min-size', '50', '--max-size', '40'],
        cwd=REPO)
    assert proc.returncode == 2
    assert ('make_digits_coco.py: error: need min_size <= max_size'
            in proc.stdout)
    assert 'Traceback' not in proc.stdout
