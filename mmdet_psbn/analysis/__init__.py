# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .collapse import (GAMMA_THR, PROB_THR, ActivationProbe, CollapseStats,
                       attach_flops, attach_rectified, measure_model,
                       measure_state_dict, norm_layers, stage_of)
from .flops import ChannelFlops, channel_flops

__all__ = [
    'GAMMA_THR', 'PROB_THR', 'ActivationProbe', 'CollapseStats',
    'attach_flops', 'attach_rectified', 'measure_model', 'measure_state_dict', 'norm_layers',
    'stage_of', 'ChannelFlops', 'channel_flops'
]
