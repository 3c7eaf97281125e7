"""The middleware that serves jobs' models, against a stand-in for the jobs' models
(:class:`~sglang.srt.mezo.server.serving_middleware.ServedJobModels`) and for SGLang's app: what it
passes on, rewrites, answers itself, and holds while a response is sent. The real thing runs in
tests/integration/test_server*.py."""

from __future__ import annotations

import asyncio
import json
from typing import Optional, Sequence

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.catalog import JobModel
from sglang.srt.mezo.server.serving_middleware import JobModelsMiddleware, ServedJobModels

MODEL = JobModel("ft-a", "ftjob-" + "0" * 24, "adapter", "/adapters/ft-a", 1)


class Models:
    """A ServedJobModels that knows one job model, ``ft-a``, and one gone, ``ft-gone``."""

    def __init__(self) -> None:
        self.held: list[list[str]] = []
        self.released: list[list[str]] = []

    async def model_list(self) -> dict:
        return {"object": "list", "data": [{"id": "ft-a"}]}

    async def model_card(self, name: str) -> Optional[tuple[int, dict]]:
        return (200, {"id": name}) if name == "ft-a" else None

    async def models_for_request(self, path: str, payload: dict) -> tuple[list[JobModel], Optional[dict]]:
        if payload.get("model") == "ft-gone":
            raise RequestError("ft-gone was deleted", "model", 404, "model_not_found")
        if payload.get("model") == "ft-a":
            return [MODEL], {**payload, "model": "base:ft-a"}
        return [], None

    async def acquire(self, models: Sequence[JobModel]) -> list[str]:
        self.held.append([m.name for m in models])
        return self.held[-1]

    async def release(self, held: list[str]) -> None:
        self.released.append(held)


def call(models: ServedJobModels, method: str, path: str, body: bytes = b"") -> tuple[Optional[dict], list, dict]:
    """(what SGLang's app got: its scope's headers and body, or None; what was sent back; the
    response's status and JSON body when the middleware answered)."""
    seen: dict = {}

    async def app(scope, receive, send):
        message = await receive()
        seen.update(headers=dict(scope["headers"]), body=message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    asyncio.run(JobModelsMiddleware(app, models)(scope, receive, send))
    answer = {}
    if sent and sent[0]["status"] != 200 or not seen:
        answer = {"status": sent[0]["status"], "body": json.loads(sent[1]["body"])}
    return (seen or None), sent, answer


def test_a_request_for_a_job_model_is_rewritten_and_holds_the_model_while_it_is_served():
    models = Models()
    body = json.dumps({"model": "ft-a", "messages": []}).encode()
    seen, _, _ = call(models, "POST", "/v1/chat/completions", body)
    assert json.loads(seen["body"]) == {"model": "base:ft-a", "messages": []}
    assert seen["headers"][b"content-length"] == str(len(seen["body"])).encode()
    assert models.held == [["ft-a"]] and models.released == [["ft-a"]]


def test_a_deleted_model_is_answered_by_the_middleware():
    models = Models()
    seen, _, answer = call(models, "POST", "/v1/completions", json.dumps({"model": "ft-gone"}).encode())
    assert seen is None
    assert answer["status"] == 404 and answer["body"]["error"]["code"] == "model_not_found"
    assert models.held == []


def test_other_requests_pass_through_untouched():
    models = Models()
    for method, path, body in (("POST", "/generate", b"not json"), ("POST", "/v1/completions", b'{"model": "base"}'),
                               ("GET", "/v1/models/base", b"")):
        seen, _, _ = call(models, method, path, body)
        assert seen["body"] == body
    assert models.held == []


def test_the_model_list_and_a_job_model_card_come_from_the_jobs_models():
    _, _, answer = call(Models(), "GET", "/v1/models")
    assert answer == {"status": 200, "body": {"object": "list", "data": [{"id": "ft-a"}]}}
    _, _, answer = call(Models(), "GET", "/v1/models/ft-a")
    assert answer == {"status": 200, "body": {"id": "ft-a"}}
