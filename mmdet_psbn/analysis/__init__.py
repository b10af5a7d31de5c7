# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""The collapse measures (:mod:`.collapse`) and the FLOPs they remove
(:mod:`.flops`); the plots (:mod:`.plots`, matplotlib) are imported only by
what draws."""
from .collapse import (GAMMA_THR, PROB_THR, ActivationProbe, CollapseStats,
                       attach_flops, attach_rectified, bn_layers_in_state_dict,
                       check_thresholds, layer_kind, measure_model,
                       measure_state_dict, norm_layers, stage_of)
from .flops import ChannelFlops, channel_flops

__all__ = [
    'GAMMA_THR', 'PROB_THR', 'ActivationProbe', 'ChannelFlops',
    'CollapseStats', 'attach_flops', 'attach_rectified',
    'bn_layers_in_state_dict', 'channel_flops', 'check_thresholds',
    'layer_kind', 'measure_model', 'measure_state_dict', 'norm_layers',
    'stage_of'
]
