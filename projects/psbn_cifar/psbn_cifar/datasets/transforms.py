# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""CIFAR transforms on uint8 HxWx3 arrays, in the ``psbn_cifar`` scope's
``TRANSFORMS``.

The standard CIFAR augmentation is ``RandomCrop(crop_size=32, padding=4)``
then mmcv's ``RandomFlip(prob=0.5, direction='horizontal')`` (in the root
registry, found from this scope); per-channel normalisation happens on the
batch in :class:`~psbn_cifar.models.ClsDataPreprocessor`.

Note:
    ``RandomCrop`` here is ``psbn_cifar.RandomCrop``; in the ``mmdet``
    scope the same name is mmdet's detection crop. :class:`~.CIFAR10`
    builds its pipeline in this scope whatever the current one is.
"""
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import BaseDataElement

from ..registry import TRANSFORMS

__all__ = ['PackInputs', 'RandomCrop']

#: What :class:`PackInputs` keeps as metainfo by default.
META_KEYS = ('sample_idx', 'img_shape', 'flip', 'true_label')


@TRANSFORMS.register_module()
class RandomCrop(BaseTransform):
    """Zero-pad by ``padding`` pixels on each side, then crop a random
    ``crop_size`` square (4 and 32 for CIFAR).

    Uses numpy's global generator, which mmengine seeds per worker.
    """

    def __init__(self,
                 crop_size: int = 32,
                 padding: int = 4,
                 pad_val: int = 0) -> None:
        if crop_size < 1 or padding < 0:
            raise ValueError(f'need crop_size >= 1 and padding >= 0, got '
                             f'{crop_size!r}, {padding!r}')
        self.crop_size = crop_size
        self.padding = padding
        self.pad_val = pad_val

    def transform(self, results: dict) -> dict:
        img = results['img']
        p = self.padding
        if p:
            img = np.pad(
                img, ((p, p), (p, p), (0, 0)), constant_values=self.pad_val)
        h, w = img.shape[:2]
        if h < self.crop_size or w < self.crop_size:
            raise ValueError(f'image {h}x{w} (after padding) is smaller than '
                             f'crop_size {self.crop_size}')
        y = np.random.randint(0, h - self.crop_size + 1)
        x = np.random.randint(0, w - self.crop_size + 1)
        results['img'] = np.ascontiguousarray(img[y:y + self.crop_size,
                                                  x:x + self.crop_size])
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, '
                f'padding={self.padding})')


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """Pack an image and its label for :class:`ImageClassifier`.

    ``inputs``: uint8 CHW tensor; ``data_samples``: a ``BaseDataElement``
    with ``gt_label`` (LongTensor (1,)) and the metainfo keys in
    ``meta_keys`` that the item has.
    """

    def __init__(self, meta_keys=META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = results['img']
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = BaseDataElement(
            metainfo={k: results[k]
                      for k in self.meta_keys if k in results})
        if 'gt_label' in results:
            sample.gt_label = torch.tensor([int(results['gt_label'])])
        return dict(inputs=inputs, data_samples=sample)
