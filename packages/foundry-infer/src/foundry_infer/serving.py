"""Starting and stopping the HTTP server for ``foundry-infer serve``."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .engines import load_engine
from .errors import FoundryError
from .model_dir import load_tokenizer, read_generation_defaults
from .server import InferenceService, ServerSettings, create_app

__all__ = ["build_service", "run_server"]


def build_service(args: argparse.Namespace) -> InferenceService:
    """Load the model named by the serve arguments and wrap it in a service."""
    fit_slots = args.max_batch_size is None  # the static engine fits its slots to the GPU
    if fit_slots:
        args.max_batch_size = 64 if str(args.device).startswith("cuda") else 8
    for name in ("max_batch_size", "max_queue", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise FoundryError(f"--{name.replace('_', '-')} must be at least 1.")
    if args.max_model_len is not None and args.max_model_len < 2:
        raise FoundryError("--max-model-len must be at least 2.")
    engine = load_engine(
        args.model,
        args.backend,
        device=args.device,
        provider=args.provider,
        dtype=args.dtype,
        engine=args.engine,
        max_batch_size=args.max_batch_size,
        max_len=args.max_model_len,
        compile_decode=args.compile_decode,
        fit_slots=fit_slots,
    )
    slots = getattr(engine, "max_batch_size", None)  # the static engine's, after fitting
    if isinstance(slots, int):
        args.max_batch_size = slots
    capture: Callable[[], int] | None = getattr(engine, "capture_all", None)
    if capture is not None:
        start = time.perf_counter()
        if graphs := capture():
            took = time.perf_counter() - start
            print(f"captured {graphs} CUDA graphs in {took:.1f} s", file=sys.stderr)
    warm: Callable[[], int] | None = getattr(engine, "warm_compiled", None)
    if warm is not None:
        start = time.perf_counter()
        if buckets := warm():
            took = time.perf_counter() - start
            print(
                f"compiled the decode layers for {buckets} batch sizes in {took:.1f} s",
                file=sys.stderr,
            )
    tokenizer = load_tokenizer(args.model)
    settings = ServerSettings(
        model_name=args.model_name or Path(args.model).resolve().name,
        api_key=args.api_key or None,
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        max_model_len=args.max_model_len,
    )
    return InferenceService(
        engine, tokenizer, read_generation_defaults(args.model, tokenizer), settings
    )


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise FoundryError(
                f"cannot listen on --host {host} ({exc.strerror}): it is not an address of this "
                "machine. Give an IP address or host name of one of its interfaces, e.g. "
                "127.0.0.1 (the default, this machine only) or 0.0.0.0 (every interface)."
            ) from exc
        except OSError as exc:
            raise FoundryError(
                f"cannot listen on {host}:{port} ({exc.strerror}). Choose another --port or stop "
                "the process using it."
            ) from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(args: argparse.Namespace) -> None:
    """Serve until SIGINT/SIGTERM, then finish in-flight requests and stop the scheduler."""
    import uvicorn

    _check_port(args.host, args.port)
    if not _is_loopback(args.host) and not args.api_key:
        print(
            f"warning: serving on {args.host} without an API key; anyone who can reach this "
            "port can use the model. Pass --api-key.",
            file=sys.stderr,
        )
    service = build_service(args)
    app = create_app(service)
    print(
        f"serving {service.settings.model_name!r} ({service.engine.name}"
        f"{getattr(service.engine, 'startup_note', str)()}) on "
        f"http://{args.host}:{args.port}  (OpenAPI: /docs)",
        file=sys.stderr,
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=30
    )
    try:
        _graceful_server_class()(config).run()
    finally:
        service.close()


def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, except that a SIGINT/SIGTERM it has handled is not raised again.

        uvicorn re-raises the signal after its graceful shutdown, so the process dies of it
        (exit 143 for SIGTERM) although every in-flight request was answered; a service manager
        then reports a failure. Here the shutdown is the whole answer to the signal: exit 0.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer
