"""A checkpoint that cannot be written (disk full, file-size limit) is one clear `error:`.

The write failure is real: the training process runs under RLIMIT_FSIZE with SIGXFSZ ignored,
so torch.save's write of the checkpoint fails with EFBIG (what ENOSPC looks like to torch: its
zip writer ends in ``RuntimeError: ... unexpected pos``) while the config and metrics files,
far smaller, still write.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from composer.core import Callback, State
from composer.loggers import Logger
from foundry_train.checkpointing.resume import find_latest_checkpoint
from foundry_train.checkpointing.save_errors import write_failure_reason

# Past the config (a few KB) and metrics.jsonl; far below a checkpoint of the debug MPT (MBs).
FILE_SIZE_LIMIT = 256 * 1024


def _limit_file_size() -> None:  # runs in the child between fork and exec; both are inherited
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_checkpoint_write_failure_is_one_error_naming_the_save_folder(
    assets: dict, h: object, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    cfg = h.base_config(assets, folder, max_duration="2ba", save_interval="2ba")  # type: ignore[attr-defined]
    cfg["callbacks"] = {"plot": False}
    path = h.write_config(tmp_path / "cfg.yaml", cfg)  # type: ignore[attr-defined]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "foundry_train", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=_limit_file_size,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr[-3000:]
    message = errors[0]
    print(message)  # the exact text, for the record (pytest -s)
    assert f"save_folder '{folder}'" in message
    assert "File too large" in message and "GiB free" in message
    assert "ep0-ba2-rank0.pt had reached 256 KiB" in message  # cut at the limit
    assert f"'{folder / 'incomplete'}'" in message and "save_num_checkpoints_to_keep" in message
    assert (folder / "metrics.jsonl").is_file()  # the small files were written
    assert (folder / "ep0-ba2-rank0.pt").stat().st_size == FILE_SIZE_LIMIT
    assert find_latest_checkpoint(folder) is None  # the cut file is never taken for complete


class _DiskFullAtBatchEnd(Callback):
    def batch_end(self, state: State, logger: Logger) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_outside_a_checkpoint_save_is_left_alone(
    assets: dict, h: object, tmp_path: Path
) -> None:
    from foundry_train.config import parse_config
    from foundry_train.trainer import train

    cfg = h.base_config(assets, tmp_path / "run", max_duration="1ba")  # type: ignore[attr-defined]
    cfg["callbacks"] = {"plot": False}
    with pytest.raises(OSError, match="No space left") as caught:
        train(parse_config(cfg), extra_callbacks=[_DiskFullAtBatchEnd()])
    assert type(caught.value) is OSError  # not turned into a checkpoint error


def test_write_failures_are_recognised_through_the_exception_chain() -> None:
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        try:  # as torch.save raises it: the zip writer's error while handling the OSError
            try:
                raise OSError(code, os.strerror(code))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 9")  # noqa: B904
        except RuntimeError as exc:
            assert os.strerror(code) in (write_failure_reason(exc) or "")  # the OSError's reason
    for text in ("unexpected pos 15332047808 vs 15332047708", "PytorchStreamWriter failed writing"):
        assert write_failure_reason(RuntimeError(text)) is not None
    assert write_failure_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert write_failure_reason(RuntimeError("CUDA out of memory")) is None
