# Paper §3 / §5.1: SGD (momentum 0.9, weight decay 5e-4, batch 128, lr 0.1),
# cosine annealing with warm restarts: 9 rounds of 100 epochs, each from
# lr 0.1 down to 0, stepped every iteration. A snapshot is saved, evaluated
# and measured at the end of every round (RestartSnapshotHook).
rounds, round_epochs = 9, 100
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(
    type='CosineRestartLR',
    periods=[round_epochs] * rounds,
    restart_weights=[1.0] * rounds,
    eta_min=0.0,
    by_epoch=True,
    convert_to_iter_based=True)
train_cfg = dict(
    by_epoch=True, max_epochs=rounds * round_epochs, val_interval=round_epochs)
val_cfg = dict()
test_cfg = dict()
# --auto-scale-lr scales lr by (processes x batch_size) / 128.
auto_scale_lr = dict(enable=False, base_batch_size=128)
# CollapseMonitorHook: collapse measures every 100 iterations and at each
# epoch end (train/collapse/{collapsed,dead,sparsity,...}, work_dir/collapse).
custom_hooks = [
    dict(type='CollapseMonitorHook', interval=100),
    dict(type='RestartSnapshotHook', ensemble=3),
]
