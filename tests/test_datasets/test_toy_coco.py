# Copyright (c) mmdet-psbn contributors. All rights reserved.
import filecmp
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from mmdet_psbn.datasets import TOY_CLASSES, make_toy_coco
from mmdet_psbn.datasets import toy_coco as toy_module


def test_layout_is_coco_and_boxes_are_sane(tmp_path):
    root = tmp_path / 'toy'
    make_toy_coco(
        str(root),
        num_train=6,
        num_val=3,
        image_size=96,
        min_size=16,
        max_size=40)
    for split, n in (('train', 6), ('val', 3)):
        coco = COCO(str(root / 'annotations' / f'instances_{split}2017.json'))
        assert len(coco.getImgIds()) == n
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
            list(TOY_CLASSES)
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 96.01 and y + h <= 96.01
            assert 16 * 0.8 <= max(w, h) <= 40 * 1.01
            assert 0 < ann['area'] <= w * h * 1.001  # fields are rounded
        for img in coco.loadImgs(coco.getImgIds()):
            assert (root / f'{split}2017' / img['file_name']).is_file()


def test_same_arguments_same_bytes(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    make_toy_coco(str(a), num_train=4, num_val=2, seed=3)
    make_toy_coco(str(b), num_train=4, num_val=2, seed=3)
    cmp = filecmp.dircmp(a, b)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for sub in ('annotations', 'train2017', 'val2017'):
        names = os.listdir(a / sub)
        match, mismatch, errors = filecmp.cmpfiles(
            a / sub, b / sub, names, shallow=False)
        assert not mismatch and not errors and len(match) == len(names)
    c = tmp_path / 'c'
    make_toy_coco(str(c), num_train=4, num_val=2, seed=4)
    assert not filecmp.cmp(
        a / 'train2017' / '000000000001.png',
        c / 'train2017' / '000000000001.png',
        shallow=False)


def test_second_call_is_a_no_op_and_args_change_rebuilds(tmp_path):
    root = tmp_path / 'toy'
    make_toy_coco(str(root), num_train=2, num_val=1)
    img = root / 'train2017' / '000000000001.png'
    mtime = img.stat().st_mtime_ns
    make_toy_coco(str(root), num_train=2, num_val=1)
    assert img.stat().st_mtime_ns == mtime
    make_toy_coco(str(root), num_train=3, num_val=1)
    assert len(os.listdir(root / 'train2017')) == 3


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_imwrite(path, img):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return True

    monkeypatch.setattr(toy_module.cv2, 'imwrite', failing_imwrite)
    with pytest.raises(KeyboardInterrupt):
        make_toy_coco(str(tmp_path / 'toy'), num_train=4, num_val=2)
    assert os.listdir(tmp_path) == []


def test_refuses_foreign_folder_and_bad_sizes(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('user data')
    with pytest.raises(FileExistsError, match='not a toy COCO set'):
        make_toy_coco(str(tmp_path / 'mine'))
    assert (tmp_path / 'mine' / 'keep.txt').exists()
    with pytest.raises(ValueError, match='min_size'):
        make_toy_coco(str(tmp_path / 'x'), min_size=50, max_size=40)
    with pytest.raises(ValueError, match='num_train'):
        make_toy_coco(str(tmp_path / 'x'), num_train=0)


def test_objects_are_visible_in_pixels(tmp_path):
    """The boxes mark real shapes: pixels inside differ from the border."""
    import cv2
    root = tmp_path / 'toy'
    make_toy_coco(str(root), num_train=3, num_val=1)
    coco = COCO(str(root / 'annotations' / 'instances_train2017.json'))
    for img_info in coco.loadImgs(coco.getImgIds()):
        img = cv2.imread(str(root / 'train2017' / img_info['file_name']))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_info['id'])):
            x, y, w, h = (int(round(v)) for v in ann['bbox'])
            cx, cy = x + w // 2, y + h // 2
            centre = img[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3)
            # Flat fill colour at the centre (background has noise).
            assert np.ptp(centre.astype(int), axis=0).max() <= 20
