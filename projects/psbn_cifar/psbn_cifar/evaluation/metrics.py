# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Top-k accuracy, mmpretrain-style (``'psbn_cifar.Accuracy'``)."""
from typing import Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS

__all__ = ['Accuracy']


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, logged as ``accuracy/top1``...

    Reads ``pred_score`` and ``gt_label`` of the predicted data samples
    (:class:`~psbn_cifar.models.ImageClassifier`). With random
    labels it scores against those; ``true_label`` is not used.

    Args:
        topk (int | Sequence[int]): Defaults to 1.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Defaults to ``'accuracy'``.
    """
    default_prefix: Optional[str] = 'accuracy'

    def __init__(self,
                 topk: Union[int, Sequence[int]] = 1,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = (topk, ) if isinstance(topk, int) else tuple(topk)
        if not self.topk or any(
                isinstance(k, bool) or not isinstance(k, int) or k < 1
                for k in self.topk):
            raise ValueError(f'topk must be positive integers, got {topk!r}')

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:
            get = sample.get if isinstance(
                sample, dict) else (lambda k, s=sample: getattr(s, k, None))
            score, label = get('pred_score'), get('gt_label')
            if score is None or label is None:
                raise KeyError('Accuracy needs pred_score and gt_label in '
                               'each predicted sample')
            self.results.append(
                (score.detach().cpu(), int(torch.as_tensor(label).item())))

    def compute_metrics(self, results: list) -> dict:
        scores = torch.stack([r[0] for r in results])
        labels = torch.tensor([r[1] for r in results])
        out = {}
        for k in self.topk:
            k_ = min(k, scores.shape[1])
            hit = (scores.topk(k_, dim=1).indices == labels[:, None]).any(1)
            out[f'top{k}'] = 100.0 * hit.float().mean().item()
        return out
