# cifar10_bs128.py on the fast path: the whole data set lives on the device
# (DeviceCIFAR10, one gather a batch, no DataLoader workers) and the same
# augmentation (4-pixel zero padding + random 32x32 crop, horizontal flip)
# runs batched on the device in the data preprocessor, before normalisation.
# An experiment switches to it by naming this file instead of
# cifar10_bs128.py among its bases.
_base_ = './cifar10_bs128.py'
data_preprocessor = dict(
    type='CropFlipDataPreprocessor', crop_size=32, padding=4, flip_prob=0.5)

# NOTE: the Runner looks collate_fn up with FUNCTIONS.get, which does not
# follow default_scope: hence the scope prefix. num_workers must be 0
# (workers cannot use CUDA tensors); each
# process holds the whole set (150 MB of uint8 for CIFAR-10's 50 000 images)
# and DefaultSampler gives it its shard of the indices.
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    collate_fn=dict(type='psbn_cifar.prebatched_collate'),
    dataset=dict(type='DeviceCIFAR10', pipeline=[]))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    collate_fn=dict(type='psbn_cifar.prebatched_collate'),
    dataset=dict(type='DeviceCIFAR10', pipeline=[]))
test_dataloader = val_dataloader
