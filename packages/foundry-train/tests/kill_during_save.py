"""Test helper (run as a script): train, and die by SIGKILL half-way through writing a checkpoint.

usage: python kill_during_save.py CONFIG.yaml N   -- the N-th checkpoint write is cut in half.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import torch
from foundry_train.config import load_config
from foundry_train.trainer import train

_real_save = torch.save
_calls = {"n": 0}


def _dying_save(obj, f, *args, **kwargs):  # composer writes checkpoints with torch.save
    _calls["n"] += 1
    if _calls["n"] < int(sys.argv[2]) or not hasattr(f, "write"):
        return _real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = _dying_save
train(load_config(sys.argv[1]))
