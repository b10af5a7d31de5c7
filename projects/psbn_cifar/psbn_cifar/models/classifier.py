# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""ImageClassifier, its data preprocessor, neck and head.

Data contract (what :class:`~psbn_cifar.datasets.PackInputs` produces):
``inputs`` is a list (or batch) of uint8 CHW image tensors in RGB order,
``data_samples`` a list of :class:`mmengine.structures.BaseDataElement` with
``gt_label`` (a LongTensor of shape (1,)) and the metainfo ``sample_idx``.
Predictions are the same elements with ``pred_score`` (softmax over the
classes, shape (C,)) and ``pred_label`` (shape (1,)) added. A batch may also
arrive as one uint8 (N, C, H, W) tensor (``DeviceCIFAR10``); the data
preprocessors take both.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmengine.model import BaseModel, BaseModule, ImgDataPreprocessor
from mmengine.structures import BaseDataElement

from ..registry import MODELS

__all__ = [
    'ClsDataPreprocessor', 'CropFlipDataPreprocessor', 'GlobalAveragePooling',
    'ImageClassifier', 'LinearClsHead', 'random_crop_flip'
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
        super().__init__(
            mean=mean, std=std, bgr_to_rgb=to_rgb, non_blocking=non_blocking)


def random_crop_flip(
        inputs: torch.Tensor,
        crop_size: int = 32,
        padding: int = 4,
        flip_prob: float = 0.5,
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    r"""``RandomCrop(crop_size, padding)`` then ``RandomFlip(flip_prob,
    'horizontal')`` on a whole (N, C, H, W) batch, with one gather.

    Each image is zero-padded by ``padding`` pixels on each side, an
    offset ``(dy, dx)`` is drawn uniformly from ``0 .. H + 2 * padding -
    crop_size`` (and likewise for W), and the crop is mirrored
    left-right with probability ``flip_prob``:

    .. math::
        out[n, c, i, j] = padded[n, c, dy_n + i, dx_n + (crop - 1 - j
        \text{ if flipped}_n \text{ else } j)]

    The same distribution as the per-sample transforms, drawn from
    ``generator`` (on the device of ``inputs``; torch's default one if
    None). Any dtype: on raw uint8 the padding is pixel value 0, as in the
    ordinary pipeline.
    """
    if inputs.dim() != 4:
        raise ValueError(f'random_crop_flip needs an (N, C, H, W) batch, got '
                         f'shape {tuple(inputs.shape)}')
    n, c, h, w = inputs.shape
    span_y = h + 2 * padding - crop_size + 1
    span_x = w + 2 * padding - crop_size + 1
    if span_y < 1 or span_x < 1:
        raise ValueError(f'crop_size {crop_size} is larger than the padded '
                         f'image ({h}x{w} + 2 x {padding})')
    dev = inputs.device
    dy = torch.randint(0, span_y, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, span_x, (n, 1), device=dev, generator=generator)
    flip = torch.rand(n, 1, device=dev, generator=generator) < flip_prob
    steps = torch.arange(crop_size, device=dev)
    rows = dy + steps
    cols = dx + torch.where(flip, steps.flip(0), steps)
    if padding:
        inputs = F.pad(inputs, (padding, ) * 4)
    return inputs[torch.arange(n, device=dev).view(n, 1, 1, 1),
                  torch.arange(c, device=dev).view(1, c, 1, 1),
                  rows.view(n, 1, crop_size, 1),
                  cols.view(n, 1, 1, crop_size)]


@MODELS.register_module()
class CropFlipDataPreprocessor(ClsDataPreprocessor):
    """:class:`ClsDataPreprocessor` that also augments the batch in
    training: zero padding, random crop, horizontal flip
    (:func:`random_crop_flip`), on the device, before normalisation.

    The augmentation half of the fast CIFAR path (``DeviceCIFAR10`` is the
    data half); in eval mode it only normalises.

    Args:
        mean, std, to_rgb, non_blocking: As :class:`ClsDataPreprocessor`.
        crop_size (int): Side of the crop. Defaults to 32.
        padding (int): Zero padding on each side. Defaults to 4.
        flip_prob (float): Probability of a left-right flip. Defaults to
            0.5.

    Note:
        The draws come from a generator of its own on the batch's device,
        seeded on first use with ``torch.initial_seed() + rank``: the seed
        mmengine's ``randomness=dict(seed=...)`` set (or drew), so a seeded
        run repeats its augmentations, and the ranks of a distributed run
        differ as DataLoader workers do. The generator state is not
        checkpointed (nor is the workers'); a resumed run draws afresh.
    """

    def __init__(self,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 to_rgb: bool = False,
                 non_blocking: bool = False,
                 crop_size: int = 32,
                 padding: int = 4,
                 flip_prob: float = 0.5) -> None:
        if not (isinstance(crop_size, int) and isinstance(padding, int)
                and crop_size >= 1 and padding >= 0 and 0 <= flip_prob <= 1):
            raise ValueError(f'need integers crop_size >= 1 and padding >= '
                             f'0, and 0 <= flip_prob <= 1; got crop_size='
                             f'{crop_size!r}, padding={padding!r}, '
                             f'flip_prob={flip_prob!r}')
        super().__init__(
            mean=mean, std=std, to_rgb=to_rgb, non_blocking=non_blocking)
        self.crop_size = crop_size
        self.padding = padding
        self.flip_prob = flip_prob
        self._generator: Optional[torch.Generator] = None

    def generator(self, device: torch.device) -> torch.Generator:
        """The augmentation's generator on ``device`` (made on first use)."""
        if self._generator is None or self._generator.device != device:
            seed = (torch.initial_seed() + get_rank()) % 2**64
            self._generator = torch.Generator(device=device).manual_seed(seed)
        return self._generator

    def forward(self, data: dict, training: bool = False) -> dict:
        if training:
            inputs = self.cast_data(data['inputs'])
            if isinstance(inputs, (list, tuple)):
                inputs = torch.stack(inputs)
            data = dict(
                data,
                inputs=random_crop_flip(inputs, self.crop_size, self.padding,
                                        self.flip_prob,
                                        self.generator(inputs.device)))
        return super().forward(data, training)


@MODELS.register_module()
class GlobalAveragePooling(nn.Module):
    """(N, C, H, W) -> (N, C), on each tensor of a tuple
    (``'psbn_cifar.GlobalAveragePooling'``; mmdet's and mmpretrain's namesakes
    live in their own scopes)."""

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

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        loss_weight: float = 1.0,
        init_cfg: Optional[dict] = dict(
            type='Normal', layer='Linear', std=0.01)
    ) -> None:
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
        target = torch.cat([s.gt_label
                            for s in data_samples]).to(logits.device)
        return dict(loss=self.loss_weight * F.cross_entropy(logits, target))

    def predict(
        self, feats, data_samples: Optional[List[BaseDataElement]]
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
    """Backbone -> neck (optional) -> head, mmpretrain-style.

    Registered in the ``psbn_cifar`` scope's ``MODELS`` as
    ``'ImageClassifier'``.

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
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck) if neck is not None else None
        self.head = MODELS.build(head)

    def extract_feat(self, inputs: torch.Tensor):
        x = self.backbone(inputs)
        return self.neck(x) if self.neck is not None else x

    def forward(
        self,
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
