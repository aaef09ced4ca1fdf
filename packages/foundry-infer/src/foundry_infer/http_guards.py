"""The server's HTTP edges: OpenAI-style errors, the API key, and the request-body limit."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import FoundryError

__all__ = ["APIError", "BodyLimit", "auth_dependency", "install_error_handlers"]


class APIError(Exception):
    """An error answered to the client as OpenAI-style JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


def _too_large(limit: int, size: str) -> APIError:
    return APIError(
        413,
        f"the request body is {size} bytes; this server accepts at most {limit}. Send a shorter "
        "prompt.",
        param=None,
        code="request_too_large",
    )


class BodyLimit:
    """ASGI middleware: read the whole body, at most ``limit`` bytes, before the app sees it.

    A declared Content-Length over the limit is refused at once; a chunked body is counted while
    it arrives and refused (413) as soon as it passes the limit, so nothing of an oversized body
    is parsed or tokenized.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, declared).response()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body
            body: bytes = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _too_large(self.limit, f"over {self.limit}").response()(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnect notices
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def auth_dependency(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), api_key):
            raise APIError(
                401,
                "missing or wrong API key. Send it as 'Authorization: Bearer KEY'.",
                type_="authentication_error",
                code="invalid_api_key",
            )

    return check


def _validation_error(exc: RequestValidationError) -> APIError:
    errors: list[dict[str, Any]] = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            where = err.get("loc", ("body", "?"))[-1]
            reason = (err.get("ctx") or {}).get("error", "malformed JSON")
            return APIError(
                400,
                f"the request body is not valid JSON ({reason} at character {where}). Send a "
                "JSON object.",
                code="invalid_json",
            )
    problems = []
    param = None
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = param or (loc[0] if loc else None)
        problems.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return APIError(400, "invalid request: " + "; ".join(problems[:10]), param=param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(FoundryError)
    async def user_error(request: Request, exc: FoundryError) -> JSONResponse:
        return APIError(400, exc.message).response()
