"""Shared fixtures of foundry-data's tests: a real-text corpus and a tokenizer trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]

# Written for these tests: accents, CJK, emoji, right-to-left script and odd whitespace, so that
# byte-level round trips are tested beyond ASCII.
MULTILINGUAL = (
    "Naïve café owners in Zürich serve crème brûlée.\n"
    "東京の天気は晴れです。 Привет, мир! مرحبا بالعالم 🎉🚀\n"
    "\ttabs,  double  spaces and a trailing newline\n"
)


def _corpus_documents() -> list[str]:
    """Real text at hand: foundry-data's own source and README, plus a multilingual document."""
    sources = sorted((PACKAGE / "src" / "foundry_data").glob("*.py"))
    docs = [p.read_text(encoding="utf-8") for p in sources]
    docs.append((PACKAGE / "README.md").read_text(encoding="utf-8"))
    docs.append(MULTILINGUAL)
    return [d for d in docs if d.strip()]


@pytest.fixture(scope="session")
def documents() -> list[str]:
    return _corpus_documents()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory, documents: list[str]) -> Path:
    """The documents as two .jsonl files in a folder (sorted order = document order)."""
    root = tmp_path_factory.mktemp("corpus")
    half = len(documents) // 2
    write_jsonl(root / "a.jsonl", [{"text": d, "id": i} for i, d in enumerate(documents[:half])])
    write_jsonl(root / "b.jsonl", [{"text": d, "id": i} for i, d in enumerate(documents[half:])])
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A byte-level BPE tokenizer trained on the corpus through the CLI."""
    from foundry_data.cli import main

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    assert (
        main(["train-tokenizer", str(corpus_dir), str(out), "--vocab-size", "700", "--no-progress"])
        == 0
    )
    return out


class MDSReader:
    """Reading MDS datasets back in tests."""

    @staticmethod
    def samples(path: Path | str) -> list[dict]:
        """Every sample of an MDS dataset (folder or URL), in order, read by
        ``streaming.StreamingDataset`` into a fresh cache (the dataset folder is left as it is)."""
        import tempfile

        from streaming import StreamingDataset

        with tempfile.TemporaryDirectory(prefix="mds-cache-") as cache:
            dataset = StreamingDataset(remote=str(path), local=cache, shuffle=False, batch_size=1)
            return [dataset[i] for i in range(dataset.num_samples)]

    @classmethod
    def tokens(cls, path: Path):
        """All pretraining samples back to back (an int32 array)."""
        import numpy as np

        return np.concatenate([s["tokens"] for s in cls.samples(path)])

    @staticmethod
    def tree(path: Path) -> dict[str, bytes]:
        """Relative path -> contents of every file under ``path``."""
        return {
            str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
        }


@pytest.fixture(scope="session")
def mds() -> MDSReader:
    return MDSReader()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from foundry_data.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``foundry-data`` in this process: ``cli(args) -> (exit code, stdout, stderr)``."""
    return lambda *args: run_cli(list(args), capsys)
