# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""ImageClassifier, its data preprocessor, neck and head.

Data contract (what :class:`~mmdet_psbn.datasets.PackInputs` produces):
``inputs`` is a list (or batch) of uint8 CHW image tensors in RGB order,
``data_samples`` a list of :class:`mmengine.structures.BaseDataElement` with
``gt_label`` (a LongTensor of shape (1,)) and the metainfo ``sample_idx``.
Predictions are the same elements with ``pred_score`` (softmax over the
classes, shape (C,)) and ``pred_label`` (shape (1,)) added.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel, BaseModule, ImgDataPreprocessor
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement

__all__ = [
    'ClsDataPreprocessor', 'GlobalAveragePooling', 'ImageClassifier',
    'LinearClsHead'
]


@MODELS.register_module()
class ClsDataPreprocessor(ImgDataPreprocessor):
    """Stacks, moves to the device and normalises per channel.

    mmengine's ``ImgDataPreprocessor`` with classification defaults: the
    per-channel ``mean`` / ``std`` are in 0..255 units, and ``to_rgb`` is
    off because CIFAR images are stored RGB. Normalising here (on the
    device, once per batch) instead of in the pipeline keeps the loader's
    work to uint8 crops and flips.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 to_rgb: bool = False,
                 non_blocking: bool = False) -> None:
        super().__init__(mean=mean, std=std, bgr_to_rgb=to_rgb,
                         non_blocking=non_blocking)


@MODELS.register_module()
class GlobalAveragePooling(nn.Module):
    """(N, C, H, W) -> (N, C), on each tensor of a tuple (``'GlobalAvera
    gePooling'`` in the root registry; mmdet's namesake lives in its own
    scope)."""

    def __init__(self) -> None:
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, inputs):
        if isinstance(inputs, tuple):
            return tuple(self.gap(x).flatten(1) for x in inputs)
        return self.gap(inputs).flatten(1)


@MODELS.register_module()
class LinearClsHead(BaseModule):
    """One linear layer on the last feature, trained with cross entropy.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Feature channels.
        loss_weight (float): Weight of the cross-entropy loss. Defaults to 1.
        init_cfg: Defaults to N(0, 0.01) weights, zero bias.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = dict(
                     type='Normal', layer='Linear', std=0.01)) -> None:
        super().__init__(init_cfg)
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f'num_classes and in_channels must be >= 1, got '
                             f'{num_classes!r}, {in_channels!r}')
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feats) -> torch.Tensor:
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        return self.fc(feats)

    def loss(self, feats, data_samples: List[BaseDataElement]) -> dict:
        logits = self(feats)
        target = torch.cat([s.gt_label for s in data_samples]).to(
            logits.device)
        return dict(loss=self.loss_weight * F.cross_entropy(logits, target))

    def predict(self, feats, data_samples: Optional[List[BaseDataElement]]
                ) -> List[BaseDataElement]:
        scores = F.softmax(self(feats), dim=1)
        if data_samples is None:
            data_samples = [BaseDataElement() for _ in range(len(scores))]
        for sample, score in zip(data_samples, scores):
            sample.pred_score = score.detach()
            sample.pred_label = score.argmax(0, keepdim=True).detach()
        return data_samples


@MODELS.register_module()
class ImageClassifier(BaseModel):
    """backbone -> neck (optional) -> head, mmpretrain-style.

    Registered in the root ``MODELS`` as ``'ImageClassifier'``.

    Args:
        backbone (dict): e.g. ``dict(type='CIFARResNet', depth=20)``.
        head (dict): e.g. ``dict(type='LinearClsHead', num_classes=10,
            in_channels=64)``.
        neck (dict, optional): e.g. ``dict(type='GlobalAveragePooling')``.
        data_preprocessor (dict, optional): Defaults to
            :class:`ClsDataPreprocessor` with no normalisation.
        init_cfg: Passed to ``BaseModel``.

    ``forward(inputs, data_samples, mode)`` with ``mode``:
    ``'tensor'`` (logits), ``'loss'`` (``dict(loss=...)``) or ``'predict'``
    (data samples with ``pred_score`` and ``pred_label``).
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 neck: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='ClsDataPreprocessor')
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.head = MODELS.build(head)

    def extract_feat(self, inputs: torch.Tensor):
        x = self.backbone(inputs)
        return self.neck(x) if self.neck is not None else x

    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[BaseDataElement]] = None,
                mode: str = 'tensor'
                ) -> Union[Dict[str, torch.Tensor], torch.Tensor, list]:
        if mode == 'tensor':
            return self.head(self.extract_feat(inputs))
        if mode == 'loss':
            return self.head.loss(self.extract_feat(inputs), data_samples)
        if mode == 'predict':
            return self.head.predict(self.extract_feat(inputs), data_samples)
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got "
                         f'{mode!r}')
