# Copyright (c) mmdet-psbn contributors. All rights reserved.
"""mmdet_psbn.utils.io: the one loader, the atomic writers, JSON."""
import argparse
import json
import os

import numpy as np
import pytest
import torch

from mmdet_psbn.utils.checks import InputError
from mmdet_psbn.utils.io import (atomic_dir, atomic_write, check_checkpoint,
                                 dump_json, json_default, load_checkpoint)


def test_atomic_write_replaces_only_when_done(tmp_path):
    path = tmp_path / 'sub' / 'out.json'
    with atomic_write(str(path)) as f:
        f.write('new')
        assert not path.exists()  # nothing visible before the end
    assert path.read_text() == 'new'
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(str(path)) as f:
            f.write('half')
            raise KeyboardInterrupt
    assert path.read_text() == 'new'
    assert os.listdir(path.parent) == ['out.json']  # no temporary file


def test_atomic_write_binary_for_torch_save(tmp_path):
    path = str(tmp_path / 'w.pth')
    with atomic_write(path, 'wb') as f:
        torch.save(dict(w=torch.ones(2)), f)
    assert torch.equal(load_checkpoint(path)['w'], torch.ones(2))
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_write(path, 'a'):
            pass


def test_atomic_dir_replaces_the_folder_or_nothing(tmp_path):
    root = tmp_path / 'data'
    with atomic_dir(str(root)) as tmp:
        assert not root.exists()  # nothing visible before the end
        open(os.path.join(tmp, 'a.txt'), 'w').close()
    assert os.listdir(root) == ['a.txt']
    with pytest.raises(RuntimeError):
        with atomic_dir(str(root)) as tmp:
            open(os.path.join(tmp, 'b.txt'), 'w').close()
            raise RuntimeError
    assert os.listdir(root) == ['a.txt']
    assert os.listdir(tmp_path) == ['data']


def test_load_checkpoint_messages(tmp_path):
    missing = str(tmp_path / 'none.pth')
    with pytest.raises(InputError, match=f"checkpoint '{missing}' does not"):
        load_checkpoint(missing)
    corrupt = tmp_path / 'bad.pth'
    corrupt.write_bytes(b'PK\x03\x04 not a whole checkpoint')
    for mmap in (False, True):
        with pytest.raises(
                InputError, match='cannot be read safely.*corrupt.*delete'):
            load_checkpoint(str(corrupt), mmap=mmap)
    unsafe = tmp_path / 'unsafe.pth'
    torch.save(dict(args=argparse.Namespace(a=1)), unsafe)
    with pytest.raises(
            InputError,
            match='Unsupported global.*argparse'
            '.Namespace.*if you trust the file'):
        check_checkpoint(str(unsafe))


def test_json_default_and_dump_json(tmp_path):
    obj = dict(
        t=torch.arange(3),
        a=np.ones(2),
        i=np.int64(4),
        f=np.float32(0.5),
        nan=np.float32('nan'),
        other=int)
    path = dump_json(obj, str(tmp_path / 'r.json'))
    assert json.load(open(path)) == dict(
        t=[0, 1, 2], a=[1.0, 1.0], i=4, f=0.5, nan=None, other="<class 'int'>")
    assert json_default(np.bool_(True)) is True
