"""An ASGI middleware that keeps a job's perturbed adapters to the job's own client.

A generation request (``/generate``, ``/v1/completions``, ``/v1/chat/completions``) that names a
rollout adapter (:class:`~.rollout_adapters.RolloutAdapters`) passes only with the job's key in the
``X-Job-Key`` header; without it the adapter does not exist for the request (a 404, as for any
unknown model), and a name whose step has ended gets a 404 that says so. Every other request passes
through untouched.
"""

from __future__ import annotations

import json
from typing import Callable

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.job_keys import HEADER, matches
from sglang.srt.mezo.server.rollout_adapters import RolloutAdapters
from sglang.srt.mezo.server.serving_middleware import GENERATE_PATHS, read_body, replaying, requested_names, send_json


class RolloutAccessMiddleware:
    """See the module docstring; ``served``: the base model's name (``<base>:<adapter>`` requests)."""

    def __init__(self, app: Callable, adapters: RolloutAdapters, served: str):
        self.app, self.adapters, self.served = app, adapters, served

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATE_PATHS or \
                not self.adapters.any():
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict):
            key = dict(scope["headers"]).get(HEADER.lower().encode(), b"").decode("latin-1") or None
            for name in requested_names(scope["path"], payload, self.served):
                refused = self._refusal(name, key)
                if refused is not None:
                    return await send_json(send, refused.status, refused.body())
        return await self.app(scope, replaying(body, receive), send)

    def _refusal(self, name: str, key: str | None) -> RequestError | None:
        if name in self.adapters.gone:
            return RequestError(f"the model {name!r} is gone: {self.adapters.gone[name]}; GET the job's rollouts "
                                "for the waiting step's models", "model", 404, "model_not_found")
        adapter = self.adapters.owner(name)
        if adapter is None:
            return None
        if not matches(key, {"job_key_sha256": adapter.key_sha256}):
            return RequestError(f"no such model: {name!r}; GET /v1/models lists the models served", "model", 404,
                                "model_not_found")
        return None
