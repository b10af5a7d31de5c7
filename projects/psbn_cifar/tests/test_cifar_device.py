# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The fast CIFAR path: DeviceCIFAR10 (data on the device, one gather a
batch) and CropFlipDataPreprocessor (batched crop/flip on the device)
against the ordinary CIFAR10 + per-sample pipeline."""
import numpy as np
import pytest
import torch
from cifar_test_utils import write_cifar_config
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import psbn_cifar  # noqa: F401
from psbn_cifar.datasets import CIFARDataError
from psbn_cifar.datasets.cifar_device import prebatched_collate
from psbn_cifar.models import random_crop_flip
from psbn_cifar.registry import DATASETS, MODELS

MEAN = [125.307, 122.961, 113.8575]
STD = [51.5865, 50.847, 51.255]


def device_set(root, **kwargs):
    return DATASETS.build(
        dict(type='DeviceCIFAR10', data_root=root, device='cpu', **kwargs))


def preprocessor(type_='CropFlipDataPreprocessor'):
    return MODELS.build(dict(type=type_, mean=MEAN, std=STD))


def test_batches_are_what_packinputs_makes(toy_cifar):
    """Same images, labels, shapes and dtypes as CIFAR10 + PackInputs, before
    and after the data preprocessor (eval mode: no augmentation)."""
    ds = device_set(toy_cifar)
    ref = DATASETS.build(
        dict(
            type='CIFAR10',
            data_root=toy_cifar,
            pipeline=[dict(type='PackInputs')]))
    indices = [5, 0, 199, 77]
    batch = prebatched_collate(ds.__getitems__(indices))
    items = pseudo_collate([ref[i] for i in indices])
    assert batch['inputs'].dtype == torch.uint8
    assert batch['inputs'].shape == (4, 3, 32, 32)
    assert torch.equal(batch['inputs'], torch.stack(items['inputs']))
    for got, want in zip(batch['data_samples'], items['data_samples']):
        assert got.gt_label.dtype == want.gt_label.dtype == torch.int64
        assert torch.equal(got.gt_label, want.gt_label)
        assert got.sample_idx == want.sample_idx
    ours = preprocessor()(batch, False)
    theirs = preprocessor('ClsDataPreprocessor')(items, False)
    assert ours['inputs'].dtype == theirs['inputs'].dtype == torch.float32
    torch.testing.assert_close(ours['inputs'], theirs['inputs'])
    # The classifier takes it as it takes the ordinary batch.
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='CIFARResNet', depth=20),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=64)))
    assert torch.isfinite(model(**ours, mode='loss')['loss'])


def test_labels_and_random_labels_are_cifar10s(toy_cifar):
    for kwargs in (dict(), dict(random_labels=True, random_label_seed=3),
                   dict(test_mode=True), dict(indices=list(range(50, 90)))):
        ds = device_set(toy_cifar, **kwargs)
        ref = DATASETS.build(
            dict(type='CIFAR10', data_root=toy_cifar, **kwargs))
        batch = ds.__getitems__(list(range(len(ds))))
        labels = torch.cat([s.gt_label for s in batch['data_samples']])
        np.testing.assert_array_equal(labels.numpy(), ref.gt_labels)
        imgs = np.stack([ref[i]['img'] for i in range(len(ref))])
        np.testing.assert_array_equal(
            batch['inputs'].permute(0, 2, 3, 1).numpy(), imgs)
        if kwargs.get('random_labels'):
            assert [s.true_label for s in batch['data_samples']
                    ] == [ref[i]['true_label'] for i in range(len(ref))]
            assert (labels.numpy()
                    != [s.true_label
                        for s in batch['data_samples']]).mean() > 0.75


def find_crops(out, img, mean, std):
    """(dy, dx, flip) of each normalised output image ``out`` (N, 3, 32, 32):

    the one crop of the 4-pixel zero-padded uint8 ``img`` (3, 32, 32) it
    equals.
    """
    padded = torch.nn.functional.pad(img.float(), (4, ) * 4)
    cands, keys = [], []
    for dy in range(9):
        for dx in range(9):
            crop = padded[:, dy:dy + 32, dx:dx + 32]
            for flip in (False, True):
                cands.append(crop.flip(-1) if flip else crop)
                keys.append((dy, dx, flip))
    cands = (torch.stack(cands) - mean) / std
    dist = torch.cdist(
        out.flatten(1),
        cands.flatten(1),
        compute_mode='donot_use_mm_for_euclid_dist')
    best = dist.min(1)
    assert best.values.max() < 1e-3, 'an output is no crop of the padding'
    assert (dist < 1e-3).sum(1).eq(1).all(), 'ambiguous crops'
    return np.array([keys[k] for k in best.indices.tolist()])


def test_augmentation_has_the_ordinary_distribution(toy_cifar):
    """Offsets cover 0..8 in both axes about uniformly, half the images are
    flipped, and the padding normalises to what the ordinary path gives (raw 0
    padded before normalisation): for both paths."""
    n = 1800
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    ds = device_set(toy_cifar)
    batch = prebatched_collate(ds.__getitems__([7] * n))
    img = batch['inputs'][0]
    torch.manual_seed(0)
    device_out = preprocessor()(batch, True)['inputs']

    with DefaultScope.overwrite_default_scope('psbn_cifar'):  # the configs'
        ref = DATASETS.build(
            dict(
                type='CIFAR10',
                data_root=toy_cifar,
                pipeline=[
                    dict(type='RandomCrop', crop_size=32, padding=4),
                    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
                    dict(type='PackInputs')
                ]))
    np.random.seed(0)
    ordinary_out = preprocessor('ClsDataPreprocessor')(pseudo_collate(
        [ref[7] for _ in range(n)]), True)['inputs']

    for out in (device_out, ordinary_out):
        found = find_crops(out, img, mean[0], std[0])
        for axis in (0, 1):
            counts = np.bincount(found[:, axis], minlength=9)
            assert len(counts) == 9 and counts.min() > n / 9 - 70, counts
        assert abs(found[:, 2].mean() - 0.5) < 0.05
        # Images cropped at dy = 0 have 4 rows of normalised zero padding.
        top = out[found[:, 0] == 0][:, :, :4]
        torch.testing.assert_close(top, (-mean / std).expand_as(top))


def test_eval_mode_only_normalises(toy_cifar):
    batch = device_set(toy_cifar).__getitems__(list(range(10)))
    out = preprocessor()(batch, False)['inputs']
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (batch['inputs'].float() - mean) / std)


def test_augmentation_follows_the_seed(toy_cifar):
    batch = device_set(toy_cifar).__getitems__(list(range(64)))

    def augment(seed):
        torch.manual_seed(seed)  # what randomness=dict(seed=...) does
        return preprocessor()(batch, True)['inputs']

    a = augment(0)
    assert torch.equal(a, augment(0))
    assert not torch.equal(a, augment(1))
    # The ordinary batch layout (a list of CHW tensors) is augmented too.
    listed = dict(batch, inputs=list(batch['inputs']))
    torch.manual_seed(0)
    assert torch.equal(a, preprocessor()(listed, True)['inputs'])


def test_random_crop_flip_extremes():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5)
    # No padding, full-size crop: the identity, or its mirror image.
    assert torch.equal(random_crop_flip(x, 5, 0, 0.0), x)
    assert torch.equal(random_crop_flip(x, 5, 0, 1.0), x.flip(-1))
    # A crop as large as the padded image: the zero-padded image.
    out = random_crop_flip(x, 7, 1, 0.0)
    assert out.shape == (2, 3, 7, 7) and out.dtype == torch.uint8
    assert torch.equal(out[:, :, 1:6, 1:6], x)
    assert out.sum() == x.sum()


def test_bad_input_is_refused(toy_cifar, monkeypatch):
    with pytest.raises(ValueError, match='larger than the padded image'):
        random_crop_flip(torch.zeros(1, 3, 32, 32), 41, 4)
    with pytest.raises(ValueError, match=r'\(N, C, H, W\).*\(3, 32, 32\)'):
        random_crop_flip(torch.zeros(3, 32, 32))
    for key, value in (('crop_size', 0), ('padding', -1), ('flip_prob', 1.5),
                       ('crop_size', 32.0)):
        with pytest.raises(ValueError, match=f'{key}={value!r}'):
            MODELS.build(dict(type='CropFlipDataPreprocessor', **{key: value}))
    with pytest.raises(CIFARDataError, match=r"pipeline=\[\{'type': 'Pack"):
        device_set(toy_cifar, pipeline=[dict(type='PackInputs')])
    with pytest.raises(CIFARDataError, match='make_toy_cifar.py'):
        device_set(toy_cifar + '/nowhere')
    ds = device_set(toy_cifar)
    with pytest.raises(
            TypeError, match="type='psbn_cifar.prebatched_collate'"):
        pseudo_collate(ds.__getitems__([0, 1]))
    with pytest.raises(TypeError, match='got a list'):
        prebatched_collate([ds[0], ds[1]])
    # In a DataLoader worker, data off the CPU cannot be used.
    monkeypatch.setattr('psbn_cifar.datasets.cifar_device.get_worker_info',
                        lambda: object())
    meta = DATASETS.build(
        dict(type='DeviceCIFAR10', data_root=toy_cifar, device='meta'))
    with pytest.raises(RuntimeError, match='num_workers=0'):
        meta.__getitems__([0])


def test_each_rank_gets_its_shard(toy_cifar, monkeypatch):
    """DefaultSampler shards the indices as for CIFAR10; the batches hold
    exactly the images and labels of the rank's indices."""
    ref = DATASETS.build(dict(type='CIFAR10', data_root=toy_cifar))
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(
            'mmengine.dataset.sampler.get_dist_info', lambda r=rank: (r, 2))
        with DefaultScope.overwrite_default_scope('psbn_cifar'):
            loader = Runner.build_dataloader(
                dict(
                    batch_size=32,
                    num_workers=0,
                    collate_fn=dict(type='psbn_cifar.prebatched_collate'),
                    sampler=dict(type='DefaultSampler', shuffle=True),
                    dataset=dict(
                        type='DeviceCIFAR10',
                        data_root=toy_cifar,
                        device='cpu')),
                seed=0)
        idx = []
        for batch in loader:
            ids = [s.sample_idx for s in batch['data_samples']]
            assert torch.equal(
                batch['inputs'],
                torch.from_numpy(ref.images[ids]).permute(0, 3, 1, 2))
            assert [int(s.gt_label) for s in batch['data_samples']
                    ] == [ref[i]['gt_label'] for i in ids]
            idx += ids
        assert idx == list(loader.sampler)
        seen.append(idx)
    assert len(seen[0]) == len(seen[1]) == 100
    assert sorted(seen[0] + seen[1]) == list(range(200))


def train(toy_cifar, tmp_path, seed):
    tmp_path.mkdir()
    cfg = write_cifar_config(
        tmp_path / 'cfg.py',
        toy_cifar,
        'resnet20_psbn_restart9x100_device.py',
        rounds=1,
        extra=f'randomness = dict(seed={seed})\n'
        f"work_dir = {str(tmp_path / 'w')!r}\n"
        "log_level = 'WARNING'\n")
    cfg = Config.fromfile(cfg)
    cfg.experiment_name = f'{tmp_path.name}_{seed}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_device_path_trains_through_the_runner(toy_cifar, tmp_path):
    """One round of one epoch (4 iterations of 50) with the config's hooks and
    validation, twice: the same seed gives the same weights, bit for bit."""
    a = train(toy_cifar, tmp_path / 'a', 0)
    assert (a.iter, a.epoch) == (4, 1)
    assert type(a.train_dataloader.dataset).__name__ == 'DeviceCIFAR10'
    assert type(a.val_dataloader.dataset).__name__ == 'DeviceCIFAR10'
    assert type(a.model.data_preprocessor).__name__ == \
        'CropFlipDataPreprocessor'
    hub = a.message_hub
    assert np.isfinite(hub.get_scalar('train/loss').current())
    assert 0 <= hub.get_scalar('val/accuracy/top1').current() <= 100
    assert hub.get_scalar('train/round/accuracy').current() == \
        pytest.approx(hub.get_scalar('val/accuracy/top1').current())
    b = train(toy_cifar, tmp_path / 'b', 0)
    before = a.model.state_dict()
    for key, value in b.model.state_dict().items():
        assert torch.equal(value, before[key]), key
