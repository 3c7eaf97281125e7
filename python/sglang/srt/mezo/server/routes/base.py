"""What every resource's routes share: the :class:`Resource` interface that lists them, and JSON in
and out of a route, a :class:`~sglang.srt.mezo.errors.RequestError` answered as OpenAI's error body."""

from __future__ import annotations

import abc
from typing import Any, Awaitable, Callable, NamedTuple

from fastapi import Request
from fastapi.responses import JSONResponse

from sglang.srt.mezo.errors import RequestError

Endpoint = Callable[[Request], Awaitable[Any]]


class Route(NamedTuple):
    path: str
    endpoint: Endpoint
    methods: list[str]


class Resource(abc.ABC):
    """One resource of the job API (files, jobs, models, graders)."""

    @abc.abstractmethod
    def routes(self) -> list[Route]:
        """The routes to add to SGLang's app, in the order they are added."""


def ok(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status)


def error(e: RequestError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def read_json(request: Request) -> Any:
    """The request's JSON body, or a 400 that says it is not JSON."""
    try:
        return await request.json()
    except Exception:
        raise RequestError("the request body is not valid JSON") from None


def guarded(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with a RequestError it raises answered as its HTTP error; named ``mezo_<name>``
    in SGLang's OpenAPI schema."""

    async def handler(request: Request):
        try:
            return await endpoint(request)
        except RequestError as e:
            return error(e)

    handler.__name__ = f"mezo_{endpoint.__name__}"
    handler.__annotations__ = {"request": Request}  # a class, not this module's postponed string
    return handler
