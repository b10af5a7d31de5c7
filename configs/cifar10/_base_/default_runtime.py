# Runtime of the CIFAR-10 experiments: the root scope 'mmengine' (everything
# they use is in mmengine's root registries, so mmpretrain is not needed; an
# explicit scope, not None, so that names like RandomCrop resolve to the root
# registry's even in a process where mmdet's scope was made current before),
# per-epoch logs (the hooks that measure collapse are in the schedules).
default_scope = 'mmengine'
custom_imports = dict(imports=['mmdet_psbn'], allow_failed_imports=False)

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
