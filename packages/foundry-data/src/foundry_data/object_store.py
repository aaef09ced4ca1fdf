"""Reading single files (index, manifest) from object stores with streaming's downloader."""

from __future__ import annotations

from foundry_data.errors import FoundryError, first_line

__all__ = ["download"]


def _fetch(remote: str, local: str, timeout: float) -> None:
    try:  # mosaicml-streaming >= 0.13
        from streaming.base.storage import CloudDownloader
    except ImportError:  # older streaming releases have a function instead
        from streaming.base.storage.download import download_file  # type: ignore[attr-defined]

        download_file(remote, local, timeout)
        return
    CloudDownloader.direct_download(remote, local, timeout)


def download(remote: str, local: str, *, missing: str, timeout: float = 60) -> None:
    """Download ``remote`` to ``local``.

    Raises:
        FoundryError: the object is missing (the message then ends with ``missing``), or the
            store cannot be read.
    """
    try:
        _fetch(remote, local, timeout)
    except FileNotFoundError:
        raise FoundryError(f"nothing at {remote}: {missing}") from None
    except Exception as exc:  # botocore, google, azure, ... errors
        text = first_line(exc, empty=type(exc).__name__)
        if "not found" in text.lower() or "nosuchkey" in text.lower() or "404" in text:
            raise FoundryError(f"nothing at {remote}: {missing}") from None
        raise FoundryError(
            f"cannot read {remote}: {type(exc).__name__}: {text}. Check the URL, the "
            "credentials and, for S3-compatible stores, S3_ENDPOINT_URL."
        ) from None
