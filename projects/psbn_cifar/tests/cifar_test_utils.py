# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""What the CIFAR tests share: a config writer that points a CIFAR config
at the toy root (``conftest.toy_cifar``) with a short schedule."""
import os.path as osp
import textwrap

CIFAR_CONFIGS = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs') + '/'


def write_cifar_config(path,
                       data_root,
                       base,
                       rounds=2,
                       round_epochs=1,
                       batch_size=50,
                       extra=''):
    """A config over ``projects/psbn_cifar/configs/<base>`` on the toy root:

    ``rounds`` rounds of ``round_epochs`` epochs (200 images / ``batch_size``
    iterations an epoch), single-process loaders, logs every iteration.
    """
    text = textwrap.dedent(f"""\
        _base_ = {CIFAR_CONFIGS + base!r}
        data_root = {data_root!r}
        train_dataloader = dict(
            batch_size={batch_size}, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root))
        val_dataloader = dict(
            batch_size=40, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root))
        test_dataloader = val_dataloader
        param_scheduler = dict(periods=[{round_epochs}] * {rounds},
                               restart_weights=[1.0] * {rounds})
        train_cfg = dict(max_epochs={rounds * round_epochs},
                         val_interval={round_epochs})
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval={round_epochs}))
        env_cfg = dict(cudnn_benchmark=False)
        """) + textwrap.dedent(extra)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)
