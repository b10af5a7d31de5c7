# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .collapse_monitor_hook import CollapseMonitorHook

__all__ = ['CollapseMonitorHook']
