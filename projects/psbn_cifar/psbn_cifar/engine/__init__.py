# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .snapshot_hook import RestartSnapshotHook

__all__ = ['RestartSnapshotHook']
