# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Which conv FLOPs a collapsed channel removes: the paper's sparsity.

A collapsed channel (|γ| ≈ 0) outputs a constant, so it removes

- its **producer**'s work for that output channel: the conv that feeds the
  norm layer, ``(C_in / groups) · k_h · k_w · H_out · W_out`` multiply-adds;
- each **consumer**'s work for that input channel: a conv that reads the
  norm layer's output, after only channel-wise ops (activations, pooling,
  dropout), ``(C_out / groups) · k_h · k_w · H_out · W_out``. The constant
  folds into the consumer's bias.

What is *not* counted, because the channel is no longer removable there: a
norm output that meets anything else first, above all a **residual addition**
(``out += identity``): the sum still varies, so the next conv keeps its
input channel; likewise concatenation, reshapes, attention. A norm layer
whose input is not a conv's output (no producer) counts only its consumers.
Linear layers and transposed convs are not counted at all, neither in the
removed FLOPs nor in the total.

The graph is read from one forward pass with hooks on the leaf modules, not
by tracing, so any model that runs eagerly works. Tensors are matched by
identity *and* version counter: an in-place ReLU hands on the same tensor
(one module, matched through its hooks), while an in-place ``+=`` bumps the
version outside any module and so breaks the chain, as it should.
"""
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

from .collapse import layer_kind

# Modules that act on each channel on its own: a constant channel stays a
# constant channel through them.
CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU,
               nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
               nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
               nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
               nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d)


@dataclass
class ChannelFlops:
    """Per norm layer, the conv multiply-adds each channel removes if it
    collapses (``removable``), the model's total conv multiply-adds
    (``total``), and what was found for each layer (``links``: producer and
    consumer conv names)."""
    removable: Dict[str, np.ndarray]
    total: float
    links: Dict[str, dict] = field(default_factory=dict)


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, _ConvNd) and not m.transposed


def _conv_macs_per_out_channel(conv: _ConvNd, out: torch.Tensor) -> float:
    spatial = float(np.prod(out.shape[2:])) if out.dim() > 2 else 1.0
    k = float(np.prod(conv.kernel_size))
    return conv.in_channels / conv.groups * k * spatial


def _conv_macs_per_in_channel(conv: _ConvNd, out: torch.Tensor) -> float:
    spatial = float(np.prod(out.shape[2:])) if out.dim() > 2 else 1.0
    k = float(np.prod(conv.kernel_size))
    return conv.out_channels / conv.groups * k * spatial


def default_forward(model: nn.Module, inputs: torch.Tensor):
    """Run ``model`` on a plain image tensor: mmengine models (mmdet
    detectors, classifiers) in ``mode='tensor'``, anything else directly."""
    from mmengine.model import BaseModel
    if isinstance(model, BaseModel):
        return model(inputs, mode='tensor')
    return model(inputs)


def channel_flops(model: nn.Module,
                  inputs: torch.Tensor,
                  forward: Optional[Callable] = None) -> ChannelFlops:
    """Map each norm layer's channels to the conv FLOPs they remove.

    Args:
        model (nn.Module): The model (unwrapped, not DDP).
        inputs (Tensor): An input batch; one image of the training size is
            enough. Only shapes matter.
        forward (callable, optional): ``forward(model, inputs)``; defaults to
            :func:`default_forward`.

    The pass runs in eval mode under ``no_grad`` (no running statistic
    changes) and the training flags are restored afterwards.
    """
    forward = forward or default_forward
    events: List[tuple] = []  # (module name, module, in keys, out key, out)
    keep: List[torch.Tensor] = []  # hold tensors so ids are not reused
    names = {m: n for n, m in model.named_modules()}
    pending: Dict[int, list] = {}

    def key(t):
        return (id(t), t._version)

    def pre_hook(module, args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        keep.extend(tensors)
        pending.setdefault(id(module), []).append([key(t) for t in tensors])

    def post_hook(module, args, output):
        in_keys = pending[id(module)].pop()
        if isinstance(output, torch.Tensor):
            keep.append(output)
            events.append((names[module], module, in_keys, key(output),
                           output))

    watched = [
        m for m in model.modules()
        if _is_conv(m) or layer_kind(m) is not None
        or isinstance(m, CHANNELWISE)
    ]
    handles = []
    for m in watched:
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag

    total = 0.0
    produced_by = {}  # out key of a conv -> (conv name, MACs per out channel)
    consumers = defaultdict(list)  # in key -> [(conv name, MACs per in ch)]
    passes = {}  # in key -> out key, for channel-wise modules
    for name, m, in_keys, out_key, out in events:
        if _is_conv(m):
            per_out = _conv_macs_per_out_channel(m, out)
            total += per_out * m.out_channels
            produced_by[out_key] = (name, per_out)
            if in_keys:
                consumers[in_keys[0]].append(
                    (name, _conv_macs_per_in_channel(m, out)))
        elif isinstance(m, CHANNELWISE) and in_keys:
            passes[in_keys[0]] = out_key

    removable: Dict[str, np.ndarray] = OrderedDict()
    links: Dict[str, dict] = OrderedDict()
    for name, m, in_keys, out_key, out in events:
        if layer_kind(m) is None:
            continue
        channels = out.shape[1] if out.dim() > 1 else out.shape[0]
        per_channel = removable.setdefault(name, np.zeros(channels))
        link = links.setdefault(name, dict(producers=[], consumers=[]))
        producer = produced_by.get(in_keys[0]) if in_keys else None
        if producer is not None:
            per_channel += producer[1]
            link['producers'].append(producer[0])
        # Follow the output through channel-wise modules to the convs.
        k, seen = out_key, set()
        while k is not None and k not in seen:
            seen.add(k)
            for conv_name, per_in in consumers.get(k, []):
                per_channel += per_in
                link['consumers'].append(conv_name)
            k = passes.get(k)
    return ChannelFlops(removable=removable, total=total, links=links)
