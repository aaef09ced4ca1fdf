"""`foundry-infer serve` as a real process on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: str, flags: Sequence[str] = (), timeout: float = 180) -> Iterator[str]:
    """Start `python -m foundry_infer serve MODEL FLAGS` and yield its base URL; stop it after.

    The server's stderr goes to a temporary file (read back into the error when it dies)."""
    port = free_port()
    argv = [sys.executable, "-m", "foundry_infer", "serve", model, "--port", str(port)]
    argv += ["--log-level", "warning", *flags]
    env = {**os.environ, "FOUNDRY_INFER_THREADS": os.environ.get("FOUNDRY_INFER_THREADS", "1")}
    with open(os.devnull, "w") as null, _log_file() as log:
        proc = subprocess.Popen(argv, env=env, stdout=null, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(proc, url, timeout, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_file():
    import tempfile

    return tempfile.TemporaryFile("w+")


def _wait(proc: subprocess.Popen[bytes], url: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("serve did not come up in time")
        time.sleep(0.2)
