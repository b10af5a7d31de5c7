# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""Test helper: record what this process writes to the file system.

Imported (``custom_imports``) with ``PSBN_WRITE_AUDIT_DIR`` set, it installs
a :func:`sys.addaudithook` that appends to ``<dir>/rank<RANK>.txt`` one line
per file opened for writing, folder made, file renamed or removed: the
Python-level audit events, so every write of mmengine, torch and ours.
Never part of the package.
"""
import os
import sys

_WRITE_FLAGS = (
    os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
_EVENTS = ('os.mkdir', 'os.rename', 'os.replace', 'os.remove', 'os.rmdir',
           'shutil.rmtree')


def _install(out_dir):
    path = os.path.join(out_dir, f'rank{os.environ.get("RANK", "0")}.txt')
    log = open(path, 'a', buffering=1)

    def hook(event, args):
        if event == 'open':
            target, _, flags = args
            if (isinstance(target, (str, bytes, os.PathLike))
                    and isinstance(flags, int) and flags & _WRITE_FLAGS
                    and os.fsdecode(target) != path):
                log.write(f'open {os.path.abspath(os.fsdecode(target))}\n')
        elif event in _EVENTS:
            target = args[0]
            if isinstance(target, (str, bytes, os.PathLike)):
                log.write(f'{event} {os.path.abspath(os.fsdecode(target))}\n')

    sys.addaudithook(hook)


if os.environ.get('PSBN_WRITE_AUDIT_DIR'):
    _install(os.environ['PSBN_WRITE_AUDIT_DIR'])
