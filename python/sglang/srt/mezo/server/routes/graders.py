"""``/v1/fine_tuning/alpha/graders/{run,validate}``: try a grader before training with it (the
checks and answers are :mod:`..grader_requests`')."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse

from sglang.srt.mezo.server.grader_requests import run_grader, validate_grader
from sglang.srt.mezo.server.routes.base import Resource, Route, ok, read_json


class GraderRoutes(Resource):
    def routes(self) -> list[Route]:
        return [Route("/v1/fine_tuning/alpha/graders/run", self.run_grader, ["POST"]),
                Route("/v1/fine_tuning/alpha/graders/validate", self.validate_grader, ["POST"])]

    async def run_grader(self, request: Request) -> JSONResponse:
        body = await read_json(request)
        return ok(await asyncio.to_thread(run_grader, body))  # a metric library may take a while

    async def validate_grader(self, request: Request) -> JSONResponse:
        return ok(await asyncio.to_thread(validate_grader, await read_json(request)))  # off SGLang's event loop
