# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""tools/misc/demo.py without running it: its configs load and build, the psBN
finetune differs from the BN one only in the norm, and the summary reads
collapse reports with and without the activation-based keys."""
import importlib.util
import json
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from ..conftest import REPO


def _demo():
    spec = importlib.util.spec_from_file_location(
        'demo', osp.join(REPO, 'tools', 'misc', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _demo()


def load(path):
    return Config.fromfile(osp.join(REPO, path))


def test_pretrain_config_builds_a_bn_resnet18_classifier():
    from mmengine.registry import MODELS

    import psbn_cifar  # noqa: F401
    cfg = load(demo.PRETRAIN)
    assert cfg.default_scope == 'psbn_cifar'
    init_default_scope('psbn_cifar')
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'ResNet'
    assert model.backbone.depth == 18 and model.backbone.layer4[
        -1].conv2.out_channels == 128
    assert not model.backbone.norm_eval
    assert model.head.fc.out_features == 10
    assert cfg.train_dataloader.dataset.data_root == demo.CLS_ROOT


@pytest.mark.parametrize('norm', ['BN', 'psBN'])
def test_finetune_configs_build_a_retinanet_on_the_digits(norm):
    from mmdet.registry import MODELS
    cfg = load(demo.FINETUNE[norm])
    assert cfg.default_scope == 'mmdet'
    assert cfg.train_dataloader.dataset.data_root.rstrip('/') == \
        demo.DET_ROOT
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert [h['type'] for h in cfg.custom_hooks] == ['CollapseMonitorHook']
    assert cfg.optim_wrapper.optimizer.weight_decay > 0  # psBN needs it
    init_cfg = cfg.model.backbone.init_cfg
    assert (init_cfg.type, init_cfg.prefix) == ('Pretrained', 'backbone.')
    cfg.model.backbone.init_cfg = None  # no checkpoint here
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert model.bbox_head.num_classes == 10
    norms = [
        m for n, m in model.backbone.named_modules()
        if n.endswith(('bn1', 'bn2'))
    ]
    assert norms and {
        type(m).__name__
        for m in norms
    } == {'BatchNorm2d' if norm == 'BN' else 'PostShiftedBatchNorm2d'}


def test_psbn_finetune_differs_from_bn_only_in_the_norm():
    bn = load(demo.FINETUNE['BN']).to_dict()
    ps = load(demo.FINETUNE['psBN']).to_dict()
    assert ps['model']['backbone'].pop('norm_cfg') == dict(
        type='psBN', requires_grad=True)
    assert bn['model']['backbone'].pop('norm_cfg')['type'] == 'BN'
    assert ps == bn


def test_pretrain_checkpoint_path_matches_the_finetunes_default():
    """The finetune configs run alone after the pretrain config (the demo
    passes the path explicitly as well)."""
    pre = load(demo.PRETRAIN)
    ft = load(demo.FINETUNE['BN'])
    assert ft.model.backbone.init_cfg.checkpoint == \
        f'work_dirs/demo/pretrain/epoch_{pre.train_cfg.max_epochs}.pth'


def _history(dead, inactive=None, **extra):
    rows = []
    for i, d in enumerate(dead):
        row = dict(
            iter=32 * i,
            epoch=i // 2,
            collapsed=0.0,
            dead=d,
            zero_init=0.0,
            sparsity=0.0,
            entered_dead=3 if i == 1 else 0,
            recovered=2 if i == 2 else 0)
        if inactive is not None:
            row['inactive'] = inactive[i]
        row.update(extra)
        rows.append(row)
    return rows


LAYERS = [
    # 16 + 16 ReLU-fed backbone channels, a residual-branch BN, a head GN.
    dict(
        name='backbone.bn1',
        channels=16,
        rectified=True,
        collapsed=2,
        dead=4,
        inactive=6,
        zero_init_channels=0),
    dict(
        name='backbone.layer1.0.bn1',
        channels=16,
        rectified=True,
        collapsed=0,
        dead=0,
        inactive=2,
        zero_init_channels=0),
    dict(
        name='backbone.layer1.0.bn2',
        channels=16,
        rectified=False,
        collapsed=2,
        dead=0,
        zero_init_channels=0),
    dict(
        name='bbox_head.cls_convs.0.gn',
        channels=64,
        rectified=True,
        collapsed=10,
        dead=10,
        inactive=10,
        zero_init_channels=0),
]


def _write_report(path, history, layers):
    path.mkdir(parents=True)
    with open(path / 'report.json', 'w') as f:
        json.dump(dict(history=history, layers=layers, summary={}), f)
    (path / 'history.png').write_bytes(b'')
    return str(path)


def test_summary_reads_old_and_new_reports(tmp_path, capsys):
    # A report from before ``inactive`` and ``rectified`` existed ...
    old_layers = [{
        k: v
        for k, v in r.items() if k not in ('inactive', 'rectified')
    } for r in LAYERS]
    old = _write_report(tmp_path / 'bn' / 'collapse',
                        _history([0.0, 0.10, 0.12]), old_layers)
    # ... and one with them.
    new = _write_report(
        tmp_path / 'psbn' / 'collapse',
        _history([0.0, 0.08, 0.01],
                 inactive=[0.0, 0.2, 0.05],
                 rectified_channels=96), LAYERS)
    rows = {
        n: demo.collapse_row(demo.read_report(d))
        for n, d in (('BN', old), ('psBN', new))
    }
    assert rows['BN']['dead'] == (0.0, 0.12)
    assert rows['BN']['inactive'] == (None, None)
    assert rows['BN']['dead_peak'] == 0.12
    assert (rows['BN']['entered_dead'], rows['BN']['recovered']) == (3, 2)
    # Without ``rectified`` every backbone channel counts.
    assert rows['BN']['part'] == dict(
        collapsed=4 / 48,
        dead=4 / 48,
        dead_channels=4,
        inactive=None,
        channels=48)
    assert rows['psBN']['inactive'] == (0.0, 0.05)
    assert rows['psBN']['channels'] == 96
    assert rows['psBN']['iters'] == (0, 64)
    assert rows['psBN']['part'] == dict(
        collapsed=4 / 48,
        dead=4 / 32,
        dead_channels=4,
        inactive=8 / 32,
        channels=32)

    results = {
        'BN':
        dict(
            metrics={
                'coco/bbox_mAP': 0.25,
                'coco/bbox_mAP_50': 0.5
            },
            collapse=rows['BN'],
            collapse_dir=old),
        'psBN':
        dict(
            metrics={
                'coco/bbox_mAP': 0.3,
                'coco/bbox_mAP_50': 0.6
            },
            collapse=rows['psBN'],
            collapse_dir=new),
    }
    demo.print_summary(91.4,
                       dict(lr=0.2, weight_decay=1e-2, momentum=0.9, clip=10),
                       results)
    out = capsys.readouterr().out
    assert 'test top-1 91.4 %' in out
    assert 'lr x decay x iterations = 0.128' in out  # 0.2 * 1e-2 * 64
    assert '0.01 x 0.0001 x 90000 = 0.09' in out
    assert 'gradients clipped at norm 10' in out
    lines = [line.replace('[demo]', '').strip() for line in out.splitlines()]
    header = [line.split() for line in lines].index(['BN', 'psBN'])
    table = lines[header:header + 14]
    assert table[1].split() == ['bbox', 'mAP', '0.250', '0.300']
    assert table[3] == 'backbone at the end'
    assert table[4].split()[-4:] == ['8.3', '%', '8.3', '%']
    assert table[5].split()[-4:] == ['8.3', '%', '12.5', '%']
    assert table[6].split()[-3:] == ['n/a', '25.0', '%']
    assert table[7] == 'all monitored layers, start -> end'
    assert '0.0 % -> 12.0 %' in table[9] and '0.0 % -> 1.0 %' in table[9]
    assert 'n/a -> n/a' in table[10]
    assert table[13].split()[-2:] == ['2', '2']
    assert 'dead backbone channels at the end: BN 4 of 48, psBN 4 of 32' \
        in out
    assert f'{old}/ (history.png, report.json)' in out


def test_summary_says_what_is_missing(tmp_path):
    with pytest.raises(demo.StageFailed, match='no collapse report'):
        demo.read_report(str(tmp_path))
    with pytest.raises(demo.StageFailed, match='no measurement'):
        demo.collapse_row(dict(history=[]))


def test_bad_threads_is_an_input_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        demo.run_tool(demo.main, ['--threads', '0'], prog='demo.py')
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        'demo.py: error: --threads must be >= 1, got 0\n')


def test_a_failed_stage_ends_as_bad_input_does(monkeypatch, capsys):

    def fail(args):
        raise demo.StageFailed('stage 1 failed (exit status 1): x.py')

    monkeypatch.setattr(demo, 'run_demo', fail)
    with pytest.raises(SystemExit) as exit_:
        demo.run_tool(demo.main, [], prog='demo.py')
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        'demo.py: error: stage 1 failed (exit status 1): x.py\n')
