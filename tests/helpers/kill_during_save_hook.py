# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Test helper: the kernel kills this process in the middle of a checkpoint.

With ``PSBN_KILL_DURING_SAVE="n:fraction"``: when the n-th checkpoint of
this process is about to be written, the file-size limit
(``RLIMIT_FSIZE``) is set to ``fraction`` of that checkpoint's size, so the
write that crosses it gets ``SIGXFSZ``, whose default action (restored
here: Python ignores it) ends the process on the spot: what a SIGKILL at
that byte leaves on disk. (The logs the run writes meanwhile are far
smaller than the limit.) Never part of the package.
"""
import io
import os
import resource
import signal

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillDuringSaveHook(Hook):
    priority = 'LOWEST'  # the checkpoint dict is complete by then

    def __init__(self):
        spec = os.environ.get('PSBN_KILL_DURING_SAVE')
        self.when, self.fraction = (None, None) if not spec else (int(
            spec.split(':')[0]), float(spec.split(':')[1]))
        self.saves = 0

    def before_save_checkpoint(self, runner, checkpoint):
        self.saves += 1
        if self.saves != self.when:
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        limit = max(1, int(buffer.tell() * self.fraction))
        print(
            f'KillDuringSaveHook: the kernel ends this process at byte '
            f'{limit} of {buffer.tell()}',
            flush=True)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Python starts with SIGXFSZ ignored (the write would only raise).
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(
            resource.RLIMIT_FSIZE,
            (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
