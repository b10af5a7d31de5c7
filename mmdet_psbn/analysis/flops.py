# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Which conv FLOPs a collapsed channel removes: the paper's sparsity.

A collapsed channel (|γ| ≈ 0) outputs a constant, so it removes

- its **producer**'s work for that output channel: the conv that feeds the
  norm layer, ``(C_in / groups) · k_h · k_w · H_out · W_out`` multiply-adds;
- each **consumer**'s work for that input channel: a conv that reads the
  norm layer's output, after only channel-wise ops (activations, pooling,
  dropout), ``(C_out / groups) · k_h · k_w · H_out · W_out``. The constant
  folds into the consumer's bias.

A conv between two collapsed channels (its input channel and its output
channel both removed) loses their shared multiply-adds once, not twice:
:meth:`ChannelFlops.removed` counts per conv, so sparsity is at most 1.

What is *not* counted, because the channel is no longer removable there: a
norm output that meets anything else first, above all a **residual addition**
(``out += identity``): the sum still varies, so the next conv keeps its
input channel; likewise concatenation, reshapes, attention. A norm layer
whose input is not a conv's output (no producer) counts only its consumers.
Linear layers and transposed convs are not counted at all, neither in the
removed FLOPs nor in the total.

The same pass tells which norm layers are **rectified**: their output goes
into a ReLU, ReLU6 or LeakyReLU module before anything else (through only
sign-preserving modules: identity, dropout, max pooling). Only such a
channel can be *dead* (never fires, gets no gradient); the last BN of a
residual branch and a downsample BN feed an addition, where a negative
output is a perfectly live one. A rectifier called as a function
(``F.relu``) is not a module and is not seen: its norm layer counts as not
rectified.

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

__all__ = [
    'CHANNELWISE', 'RECTIFIERS', 'SIGN_PRESERVING', 'ChannelFlops', 'ConvCall',
    'channel_flops', 'default_forward'
]

# The rectifiers after which a channel that is never positive is dead.
RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)
# Modules through which "never positive" stays "never positive".
SIGN_PRESERVING = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool1d,
                   nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)

# Modules that act on each channel on its own: a constant channel stays a
# constant channel through them.
CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU,
               nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
               nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
               nn.Dropout2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
               nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
               nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class ConvCall:
    """One call of a conv in the forward pass (a shared head conv is called
    once per pyramid level): its shape, ``unit`` = multiply-adds of one (input
    channel, output channel) pair, and the norm layers whose channels are its
    output channels (``out_norms``: the conv produces them) or its input
    channels (``in_norms``: it consumes them)."""
    name: str
    in_channels: int
    out_channels: int
    groups: int
    unit: float
    out_norms: List[str] = field(default_factory=list)
    in_norms: List[str] = field(default_factory=list)

    @property
    def macs(self) -> float:
        return self.unit * self.out_channels * self.in_channels / self.groups

    def removed(self, out_mask: np.ndarray, in_mask: np.ndarray) -> float:
        """Multiply-adds removed when the output channels ``out_mask`` and the
        input channels ``in_mask`` are removed: every (input, output) pair of a
        group that has either side removed, each pair once."""
        g = self.groups
        o = out_mask.reshape(g, -1).sum(1).astype(float)
        i = in_mask.reshape(g, -1).sum(1).astype(float)
        cin_g, cout_g = self.in_channels // g, self.out_channels // g
        return self.unit * float((o * cin_g + i * cout_g - o * i).sum())


@dataclass
class ChannelFlops:
    """Per norm layer, the conv multiply-adds each channel removes if it
    collapses alone (``removable``), the model's total conv multiply-adds
    (``total``), what was found for each layer (``links``: producer and
    consumer conv names), the conv calls (``calls``), from which
    :meth:`removed` counts what a set of collapsed channels removes together,
    and whether each norm layer's output goes into a rectifier first
    (``rectified``, see the module docstring)."""
    removable: Dict[str, np.ndarray]
    total: float
    links: Dict[str, dict] = field(default_factory=dict)
    calls: List[ConvCall] = field(default_factory=list)
    rectified: Dict[str, bool] = field(default_factory=dict)

    @property
    def rectified_layers(self) -> List[str]:
        """Names of the norm layers whose output is rectified."""
        return [name for name, r in self.rectified.items() if r]

    def removed(self, collapsed: Dict[str, np.ndarray]) -> float:
        """Conv multiply-adds removed by the collapsed channels (``collapsed``:
        a boolean mask per norm layer name; layers not in it remove nothing).

        Summing ``removable`` would count twice the pairs of a conv whose
        input channel and output channel are both collapsed (the conv
        between two collapsed norm layers); here each conv's removed pairs
        are counted once, so the result never exceeds :attr:`total`.
        """
        done = 0.0
        for call in self.calls:
            out_mask = _union(collapsed, call.out_norms, call.out_channels)
            in_mask = _union(collapsed, call.in_norms, call.in_channels)
            if out_mask.any() or in_mask.any():
                done += call.removed(out_mask, in_mask)
        return done


def _union(masks: Dict[str, np.ndarray], names: List[str],
           channels: int) -> np.ndarray:
    out = np.zeros(channels, dtype=bool)
    for name in names:
        m = masks.get(name)
        if m is not None and len(m) == channels:
            out |= m
    return out


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
    """Run ``model`` on a plain image tensor: mmengine models (mmdet detectors,
    classifiers) in ``mode='tensor'``, anything else directly."""
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
            events.append(
                (names[module], module, in_keys, key(output), output))

    watched = [
        m for m in model.modules() if _is_conv(m) or layer_kind(m) is not None
        or isinstance(m, CHANNELWISE + RECTIFIERS + SIGN_PRESERVING)
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
    calls: List[ConvCall] = []
    produced_by = {}  # out key of a conv -> (its call, MACs per out channel)
    consumers = defaultdict(list)  # in key -> [(its call, MACs per in ch)]
    passes = {}  # in key -> out key, for channel-wise modules
    readers = defaultdict(list)  # in key -> [(module, its out key)]
    for name, m, in_keys, out_key, out in events:
        if in_keys:
            readers[in_keys[0]].append((m, out_key))
        if _is_conv(m):
            per_out = _conv_macs_per_out_channel(m, out)
            total += per_out * m.out_channels
            call = ConvCall(name, m.in_channels, m.out_channels, m.groups,
                            per_out * m.groups / m.in_channels)
            calls.append(call)
            produced_by[out_key] = (call, per_out)
            if in_keys:
                consumers[in_keys[0]].append(
                    (call, _conv_macs_per_in_channel(m, out)))
        elif isinstance(m, CHANNELWISE) and in_keys:
            passes[in_keys[0]] = out_key

    removable: Dict[str, np.ndarray] = OrderedDict()
    links: Dict[str, dict] = OrderedDict()
    rectified: Dict[str, bool] = OrderedDict()
    for name, m, in_keys, out_key, out in events:
        if layer_kind(m) is None:
            continue
        # A layer called several times is rectified only if every call is.
        rectified[name] = rectified.get(name, True) and _is_rectified(
            out_key, readers)
        channels = out.shape[1] if out.dim() > 1 else out.shape[0]
        per_channel = removable.setdefault(name, np.zeros(channels))
        link = links.setdefault(name, dict(producers=[], consumers=[]))
        producer = produced_by.get(in_keys[0]) if in_keys else None
        if producer is not None:
            per_channel += producer[1]
            link['producers'].append(producer[0].name)
            producer[0].out_norms.append(name)
        # Follow the output through channel-wise modules to the convs.
        k, seen = out_key, set()
        while k is not None and k not in seen:
            seen.add(k)
            for call, per_in in consumers.get(k, []):
                per_channel += per_in
                link['consumers'].append(call.name)
                call.in_norms.append(name)
            k = passes.get(k)
    return ChannelFlops(
        removable=removable,
        total=total,
        links=links,
        calls=calls,
        rectified=rectified)


def _is_rectified(key, readers) -> bool:
    """Whether the tensor ``key`` reaches a rectifier through only sign-
    preserving modules, and nothing else reads it on the way."""
    seen = set()
    while key not in seen:
        seen.add(key)
        found = readers.get(key, [])
        if not found:
            return False  # an addition, a reshape, the model's output...
        if all(isinstance(m, RECTIFIERS) for m, _ in found):
            return True
        if len(found) == 1 and isinstance(found[0][0], SIGN_PRESERVING):
            key = found[0][1]
            continue
        return False
    return False
