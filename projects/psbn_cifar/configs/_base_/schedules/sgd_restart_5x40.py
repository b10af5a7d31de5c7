# Paper §5.2 / Table 1 (snapshot ensemble): 200 epochs in 5 rounds of 40,
# cosine annealing with warm restarts, SGD momentum 0.9, weight decay 5e-4,
# batch 128; the last 3 snapshots are ensembled (averaged softmax).
_base_ = './sgd_restart_9x100.py'
rounds, round_epochs = 5, 40
param_scheduler = dict(
    periods=[round_epochs] * rounds, restart_weights=[1.0] * rounds)
train_cfg = dict(max_epochs=rounds * round_epochs, val_interval=round_epochs)
