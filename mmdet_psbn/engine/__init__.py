# Copyright (c) mmdet-psbn contributors. All rights reserved.
from .hooks import CollapseMonitorHook

__all__ = ['CollapseMonitorHook']
