# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .collapse_monitor_hook import CollapseMonitorHook
from .snapshot_hook import RestartSnapshotHook  # noqa: F401

__all__ = ['CollapseMonitorHook']
