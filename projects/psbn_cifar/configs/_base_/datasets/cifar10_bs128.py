# CIFAR-10 (python batches under data/cifar10/cifar-10-batches-py), the
# standard augmentation: 4-pixel zero padding + random 32x32 crop, horizontal
# flip; per-channel normalisation in the data preprocessor (on the device).
# No data? python tools/misc/make_toy_cifar.py data/cifar10 (a toy set).
dataset_type = 'CIFAR10'
data_root = 'data/cifar10'
data_preprocessor = dict(
    type='ClsDataPreprocessor',
    mean=[125.307, 122.961, 113.8575],  # RGB, 0..255
    std=[51.5865, 50.847, 51.255])

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

# NOTE: batch_size is per process. The paper trains with 128 images on one
# GPU; on N GPUs keep the global batch with
#   --cfg-options train_dataloader.batch_size=$((128 / N))
# (BN statistics are then per GPU over 128/N images; use psSyncBN for the
# paper's statistics, see docs/cifar.md,
# "Several GPUs").
train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=False,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=500,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=True,
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
