"""An ASGI middleware on SGLang's app that serves jobs' models on demand.

- ``POST /generate``, ``/v1/completions``, ``/v1/chat/completions``: when the request names a job's
  model (``lora_path``, or ``model="<base>:<name>"``, or just ``model="<name>"`` as OpenAI's
  clients send a fine-tuned model), the model is loaded first within the bound
  (:class:`~.adapter_cache.AdapterCache`) and held until the response has been sent; a deleted or
  pruned one gets a 404 that says so. SGLang then handles the request as it would any other.
- ``GET /v1/models`` lists the base model, SGLang's own adapters and every job model, loaded or
  not (each card says which); ``GET /v1/models/<name>`` answers for a job model.

Everything else passes through untouched. The middleware sits inside SGLang's API-key check.

What it asks of the jobs' models is :class:`ServedJobModels`
(:class:`~.routes.models.JobModels` is the server's; a test may give its own).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Protocol, Sequence

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.catalog import JobModel

OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")


GENERATE_PATHS = ("/generate",) + OPENAI_PATHS


async def send_json(send: Callable, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replaying(body: bytes, receive: Callable) -> Callable:
    """A ``receive`` that gives ``body`` once, then what the client sends (a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def adapter_in_model(model: Any, served: str) -> Optional[str]:
    """The adapter an OpenAI ``model`` names in SGLang's ``<base>:<adapter>`` form, if any."""
    if not isinstance(model, str) or ":" not in model or model == served:
        return None
    rest = model[len(served) + 1:] if model.startswith(served + ":") else model.split(":", 1)[1]
    return rest.strip() or None


def requested_names(path: str, payload: dict, served: str) -> list[str]:
    """The adapter names a generation request asks for."""
    names: list[Any] = []
    if path in OPENAI_PATHS:
        from_model = adapter_in_model(payload.get("model"), served)
        if from_model:
            return [from_model]
    lora = payload.get("lora_path")
    names = lora if isinstance(lora, list) else [lora]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


class ServedJobModels(Protocol):
    """The jobs' models as the middleware serves them. A method that refuses a request raises a
    :class:`~sglang.srt.mezo.errors.RequestError`, which the middleware answers as it says."""

    async def model_list(self) -> dict:
        """``GET /v1/models``'s answer."""

    async def model_card(self, name: str) -> Optional[tuple[int, dict]]:
        """(status, body) of ``GET /v1/models/<name>`` for a job model; None: not one, SGLang answers."""

    async def models_for_request(self, path: str, payload: dict) -> tuple[list[JobModel], Optional[dict]]:
        """The job models a generation request names, and its payload rewritten (None: unchanged)."""

    async def acquire(self, models: Sequence[JobModel]) -> list[str]:
        """Load ``models`` (within the bound) and hold them for one request; returns what to release."""

    async def release(self, held: list[str]) -> None:
        """Give back what :meth:`acquire` held, once the response has been sent."""


class JobModelsMiddleware:
    """See the module docstring."""

    def __init__(self, app: Callable, models: ServedJobModels):
        self.app = app
        self.models = models

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method == "POST" and path in GENERATE_PATHS:
                return await self._generate(scope, receive, send)
            if method == "GET" and path.rstrip("/") == "/v1/models":
                return await send_json(send, 200, await self.models.model_list())
            if method in ("GET", "DELETE") and path.startswith("/v1/models/") and any(c in path for c in "\r\n"):
                # The routes' {model:path} is '.*', which stops at a line break: no route would take
                # it, and the framework's own 404 is not in OpenAI's error shape.
                name = path[len("/v1/models/"):]
                return await send_json(send, 404, RequestError(f"no such model: {name!r} (a model's name has no line "
                                                               "break); GET /v1/models lists the models served",
                                                               "model", 404, "model_not_found").body())
            if method == "GET" and path.startswith("/v1/models/"):
                card = await self.models.model_card(path[len("/v1/models/"):])
                if card is not None:
                    return await send_json(send, *card)
        return await self.app(scope, receive, send)

    async def _generate(self, scope, receive, send) -> None:
        body = await read_body(receive)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):  # SGLang answers what it cannot parse
            return await self.app(scope, replaying(body, receive), send)
        try:
            models, payload = await self.models.models_for_request(scope["path"], payload)
        except RequestError as e:
            return await send_json(send, e.status, e.body())
        if payload is not None:  # the request was rewritten: model="<name>" -> "<base>:<name>"
            body = json.dumps(payload).encode()
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
                         + [(b"content-length", str(len(body)).encode())])
        if not models:
            return await self.app(scope, replaying(body, receive), send)
        try:
            held = await self.models.acquire(models)
        except RequestError as e:
            return await send_json(send, e.status, e.body())
        try:
            await self.app(scope, replaying(body, receive), send)
        finally:
            await self.models.release(held)
