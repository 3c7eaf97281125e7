"""What every resource's routes share: the :class:`Resource` interface that lists them, and JSON in
and out of a route, a :class:`~sglang.srt.mezo.errors.RequestError` answered as OpenAI's error body."""

from __future__ import annotations

import abc
import re
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
    """The request's JSON body, or a 400 that says it is not JSON and where (SGLang's app parses with
    orjson, which also refuses NaN, Infinity, integers beyond 64 bits and lone surrogates)."""
    try:
        return await request.json()
    except Exception as e:
        why = str(e) if isinstance(e, ValueError) and str(e) else type(e).__name__
        raise RequestError(f"the request body is not valid JSON ({why}); send one JSON object. NaN, Infinity, "
                           "integers beyond 64 bits and unpaired surrogates (\\ud800) are not JSON either") from None


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


#: The URL prefixes the job API owns: a request under one that no route takes gets the API's error
#: body, not the framework's ``{"detail": "Not Found"}``.
API_PREFIXES = ("/v1/files", "/v1/fine_tuning")


class Fallback(Resource):
    """Answers what no route of the job API takes under its prefixes (an empty id, an id with a
    ``/``, a method the path does not have) with a 404 or 405 in OpenAI's error shape that lists
    the routes. Added after every resource: Starlette takes the first route that matches."""

    METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    def __init__(self, resources: list[Resource]):
        self.known = [r for res in resources for r in res.routes() if r.path.startswith(API_PREFIXES)]
        # A route's path as a regex: {name} is one segment, {name:path} any rest.
        self.patterns = [(re.compile("^" + re.sub(r"\{[^}:]+:path\}", ".*", re.sub(r"\{[^}:]+\}", "[^/]+", r.path))
                                     + "$"), r) for r in self.known]

    def routes(self) -> list[Route]:
        return [Route(f"{prefix}{rest}", self.no_route, self.METHODS)
                for prefix in API_PREFIXES for rest in ("", "/{rest:path}")]

    async def no_route(self, request: Request) -> JSONResponse:
        method, path = request.method, request.url.path
        allowed = sorted({m for pattern, r in self.patterns if pattern.match(path) for m in r.methods})
        if allowed:
            raise RequestError(f"{method} {path}: this path takes {', '.join(allowed)}, not {method}", None, 405,
                               "method_not_allowed")
        listing = "; ".join(f"{'/'.join(r.methods)} {r.path}" for r in self.known)
        # The id a malformed path most likely got wrong: empty, or with a '/' in it.
        param = "file_id" if path.startswith("/v1/files/") else \
            "fine_tuning_job_id" if path.startswith("/v1/fine_tuning/jobs/") else None
        raise RequestError(f"no route {method} {path} (an id is one non-empty path segment: a '/' in it is "
                           f"sent as %2F); the routes are: {listing}", param, 404, "not_found")
