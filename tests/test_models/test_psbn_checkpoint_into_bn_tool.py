# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""tools/test.py on a psBN checkpoint with a plain-BN config: alpha is folded
into the bias on load (logged), never silently dropped.

The model-level behaviour, and what mmengine does without it, are in
``test_psbn_init_fuse_trace.py``.
"""
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..conftest import run_tool, write_toy_config
from .psbn_helpers import randomize_bn

KEEP_ALL = 'model = dict(test_cfg=dict(score_thr=0.0){})\n'
PSBN = ", backbone=dict(norm_cfg=dict(type='psBN', alpha=0.05))"


def _predictions(path):
    with open(path, 'rb') as f:
        results = pickle.load(f)
    return {r['img_id']: r['pred_instances']['scores'] for r in results}


def test_test_tool_folds_psbn_checkpoint_into_bn_config(toy_coco, tmp_path):
    bn_cfg = write_toy_config(
        tmp_path / 'bn.py', toy_coco, extra=KEEP_ALL.format(''))
    ps_cfg = write_toy_config(
        tmp_path / 'ps.py', toy_coco, extra=KEEP_ALL.format(PSBN))

    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    model = randomize_bn(MODELS.build(Config.fromfile(ps_cfg).model), seed=4)
    assert model.backbone.bn1.alpha.item() == pytest.approx(0.05)
    ckpt = tmp_path / 'psbn.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=model.state_dict()), ckpt)

    outs = {}
    for name, cfg in (('ps', ps_cfg), ('bn', bn_cfg)):
        out = tmp_path / f'{name}.pkl'
        proc = run_tool([
            'tools/test.py', cfg, ckpt, '--work-dir',
            tmp_path / f'work_{name}', '--out', out
        ])
        assert proc.returncode == 0, proc.stdout[-5000:]
        assert 'unexpected key' not in proc.stdout, name
        outs[name] = (proc.stdout, _predictions(out))
    assert 'psBN checkpoint entries' not in outs['ps'][0]
    assert ('psBN checkpoint entries for 53 layers that are plain BN in '
            'this model (first: backbone.bn1) loaded with bias := bias + '
            'alpha (alpha=0.05)') in outs['bn'][0]
    ps_preds, bn_preds = outs['ps'][1], outs['bn'][1]
    assert ps_preds.keys() == bn_preds.keys() and len(ps_preds) == 8
    for img_id, scores in ps_preds.items():
        assert len(scores) > 0
        # The same detector: the same scores (top 20, tie order aside).
        torch.testing.assert_close(
            bn_preds[img_id].sort(descending=True).values[:20],
            scores.sort(descending=True).values[:20],
            rtol=1e-4,
            atol=1e-5)
