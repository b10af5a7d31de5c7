# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The fast CIFAR path: the data set as tensors on the device, one gather a
batch.

The ordinary path (:class:`~psbn_cifar.datasets.CIFAR10` + ``RandomCrop``,
``RandomFlip``, ``PackInputs`` in DataLoader workers) does per-image numpy
work and builds per-image tensors in Python, which becomes the bottleneck of
a small network trained for thousands of epochs. Here, as in the fastest
public CIFAR trainers, the whole uint8 image array and the labels go to the
device once; a batch is one ``index_select``, and the augmentation runs on
the batch in the model's data preprocessor
(:class:`~psbn_cifar.models.CropFlipDataPreprocessor`).

A config switches to it with three keys (see
``configs/cifar10/_base_/datasets/cifar10_bs128_device.py``)::

    data_preprocessor = dict(type='CropFlipDataPreprocessor', ...)
    train_dataloader = dict(
        num_workers=0, persistent_workers=False,
        collate_fn=dict(type='psbn_cifar.prebatched_collate'),
        dataset=dict(type='DeviceCIFAR10', pipeline=[]))
"""
from collections.abc import Mapping
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.device import get_device
from mmengine.structures import BaseDataElement
from torch.utils.data import get_worker_info

from ..registry import DATASETS, FUNCTIONS
from .cifar import CIFAR10, CIFARDataError

__all__ = ['DeviceCIFAR10', 'prebatched_collate']


class _Batch(dict):
    """A batch from ``__getitems__``; says which collate it needs when indexed
    like the list of samples that ``pseudo_collate`` expects."""

    def __missing__(self, key):
        raise TypeError(
            'DeviceCIFAR10 returns whole batches, not lists of samples: set '
            "collate_fn=dict(type='psbn_cifar.prebatched_collate') in its "
            'dataloader')


@FUNCTIONS.register_module()
def prebatched_collate(batch: Mapping) -> dict:
    """The collate of datasets whose ``__getitems__`` returns a whole batch
    (``DeviceCIFAR10``): the batch, as a plain dict."""
    if not isinstance(batch, Mapping):
        raise TypeError(
            'prebatched_collate takes the batch that DeviceCIFAR10.'
            f'__getitems__ returns; got a {type(batch).__name__} (a dataset '
            "that yields samples needs collate_fn=dict(type='pseudo_collate'"
            '))')
    return dict(batch)


@DATASETS.register_module()
class DeviceCIFAR10(CIFAR10):
    """:class:`CIFAR10` held on the device and fetched a batch at a time
    (``'DeviceCIFAR10'``).

    The data are read and checked by :class:`CIFAR10` (random labels
    included). On the first fetch, the images of all items become one
    uint8 (N, 3, 32, 32) tensor and their labels one LongTensor, on
    ``device``. ``__getitems__(indices)``, which torch's DataLoader calls
    with the sampler's batch of indices, returns
    ``dict(inputs=uint8 (B, 3, 32, 32), data_samples=[...])``: the
    elements carry ``gt_label`` (LongTensor (1,), on the device) and the
    metainfo ``sample_idx`` (and ``true_label`` with random labels), as
    ``PackInputs`` makes them. ``DefaultSampler`` shards and shuffles the
    indices as usual; each rank holds the whole set.

    Args:
        data_root, test_mode, random_labels, random_label_seed, **kwargs:
            As :class:`CIFAR10`.
        pipeline (list): Must be empty: no per-sample transform runs here.
            Augmentation is ``CropFlipDataPreprocessor``'s.
        device (str, optional): Where the tensors live. Defaults to
            mmengine's ``get_device()``, where the Runner puts the model
            (the current CUDA device of each rank, or the CPU).

    Note:
        The DataLoader MUST use ``collate_fn=dict(type=
        'psbn_cifar.prebatched_collate')`` and, off the CPU,
        ``num_workers=0`` (a worker process cannot use CUDA tensors; with the
        data on the device there is nothing for workers to do). Its
        ``__getitem__`` still returns one item, as :class:`CIFAR10`'s does.
        Torch's ``Subset`` and ``StackDataset``, which expect
        ``__getitems__`` to return a list of samples, cannot wrap it; use
        ``indices=`` instead.
    """

    def __init__(self,
                 data_root: str = '',
                 test_mode: bool = False,
                 pipeline: Sequence = (),
                 device: Optional[str] = None,
                 **kwargs) -> None:
        if pipeline:
            raise CIFARDataError(
                'DeviceCIFAR10 fetches whole batches, so a per-sample '
                f'pipeline would not run; got pipeline={list(pipeline)!r}. '
                'Set pipeline=[] and augment with data_preprocessor=dict('
                "type='CropFlipDataPreprocessor', ...)")
        self.device = torch.device(device or get_device())
        self._tensors: Optional[dict] = None
        super().__init__(data_root=data_root, test_mode=test_mode, **kwargs)

    def tensors(self) -> dict:
        """``inputs`` (N, 3, 32, 32) uint8 and ``gt_label`` (N,) on the device,
        ``true_label`` (N,) numpy or None; made on first call."""
        if self._tensors is None:
            if get_worker_info() is not None and self.device.type != 'cpu':
                raise RuntimeError(
                    f'DeviceCIFAR10 keeps the data on {self.device}, which '
                    'a DataLoader worker process cannot use: set '
                    'num_workers=0 and persistent_workers=False')
            if not self._fully_initialized:
                self.full_init()
            infos = [self.get_data_info(i) for i in range(len(self))]
            images = self.images[[info['img_idx'] for info in infos]]
            self._tensors = dict(
                inputs=torch.from_numpy(images).permute(
                    0, 3, 1, 2).contiguous().to(self.device),
                gt_label=torch.tensor([info['gt_label'] for info in infos],
                                      device=self.device),
                true_label=np.array([info['true_label'] for info in infos])
                if self.random_labels else None)
        return self._tensors

    def __getitems__(self, indices: Sequence[int]) -> dict:
        data = self.tensors()
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        labels = data['gt_label'].index_select(0, idx).view(-1, 1).unbind(0)
        samples = [
            BaseDataElement(metainfo=dict(sample_idx=int(i)), gt_label=label)
            for i, label in zip(indices, labels)
        ]
        if data['true_label'] is not None:
            for sample, true in zip(samples, data['true_label'][indices]):
                sample.set_metainfo(dict(true_label=int(true)))
        return _Batch(
            inputs=data['inputs'].index_select(0, idx), data_samples=samples)
