# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Command-line options of tools/train.py and tools/test.py."""
import os
import os.path as osp
import runpy

import pytest

from ..conftest import TOOLS, write_toy_config


@pytest.fixture(scope='module')
def train_tool():
    return runpy.run_path(osp.join(TOOLS, 'train.py'), run_name='train_tool')


@pytest.mark.parametrize('flag', ['--local_rank', '--local-rank'])
def test_both_local_rank_spellings(train_tool, flag, monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = train_tool['parse_args'](['cfg.py', flag, '3'])
    assert args.local_rank == 3
    assert os.environ['LOCAL_RANK'] == '3'


def test_train_options(train_tool):
    args = train_tool['parse_args']([
        'cfg.py', '--amp', '--auto-scale-lr', '--resume', '--launcher',
        'pytorch', '--cfg-options', 'train_dataloader.batch_size=4'
    ])
    assert args.amp and args.auto_scale_lr
    assert args.resume == 'auto'
    assert args.launcher == 'pytorch'
    assert args.cfg_options == {'train_dataloader.batch_size': 4}
    assert train_tool['parse_args'](['c.py', '--resume', 'x.pth']).resume \
        == 'x.pth'


def test_load_config_applies_options_and_work_dir(train_tool, toy_coco,
                                                  tmp_path):
    cfg_path = write_toy_config(tmp_path / 'my_cfg.py', toy_coco)
    args = train_tool['parse_args']([
        cfg_path, '--cfg-options', 'train_dataloader.batch_size=4',
        'randomness.seed=7'
    ])
    from mmdet_psbn.utils.tools import load_config
    cfg = load_config(args)
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.randomness.seed == 7  # a new key without a namesake is fine
    assert cfg.work_dir == osp.join('./work_dirs', 'my_cfg')


@pytest.mark.parametrize('fails', [False, True])
def test_run_tool_destroys_the_process_group(fails):
    """A distributed tool's process group ends with the tool, whether it
    finished or not: a live gloo group at interpreter shutdown can abort a
    finished process."""
    import torch.distributed as dist

    from mmdet_psbn.utils.tools import run_tool

    def main(argv):
        dist.init_process_group(
            'gloo', store=dist.HashStore(), rank=0, world_size=1)
        assert dist.is_initialized()
        if fails:
            raise RuntimeError('a bug')

    if fails:
        with pytest.raises(RuntimeError, match='a bug'):
            run_tool(main, [])
    else:
        run_tool(main, [])
    assert not dist.is_initialized()
