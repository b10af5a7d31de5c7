# Runtime of the CIFAR-10 experiments: the project's own scope 'psbn_cifar'
# (its dataset, transforms, classifier, metric and snapshot hook live in the
# registries of that scope, whose parents are mmengine's root registries,
# where psBN, psSyncBN and CollapseMonitorHook are; mmpretrain is not
# needed), per-epoch logs (the hooks that measure collapse are in the
# schedules).
default_scope = 'psbn_cifar'
custom_imports = dict(imports=['psbn_cifar'], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
