"""``/v1/files``: uploads (within ``--mezo-max-upload-mb``, :mod:`..uploads`), listed, read and
deleted; and each succeeded job's results CSV, served as OpenAI's ``file-results-...`` file."""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.openai_objects import file_object, job_status, page, results_file_object, results_job_id
from sglang.srt.mezo.server.routes.base import Resource, Route, ok
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import FINAL, JobStore
from sglang.srt.mezo.server.uploads import read_upload_form

logger = logging.getLogger(__name__)


class FileRoutes(Resource):
    def __init__(self, settings: ServerSettings, store: JobStore, files_lock: asyncio.Lock):
        self.settings = settings
        self.store = store
        # Held while a job that names a file is created, and while a file is deleted: a file is never
        # deleted between a job's check that it exists and the job's record.
        self.files_lock = files_lock

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.upload_file, ["POST"]),
            Route("/v1/files", self.list_files, ["GET"]),
            Route("/v1/files/{file_id}", self.get_file, ["GET"]),
            Route("/v1/files/{file_id}", self.delete_file, ["DELETE"]),
            Route("/v1/files/{file_id}/content", self.file_content, ["GET"]),
        ]

    async def upload_file(self, request: Request) -> JSONResponse:
        form = await read_upload_form(request, self.settings.max_upload_bytes)
        try:
            upload = form.get("file")
            if upload is None or not hasattr(upload, "read"):
                raise RequestError("the form has no 'file' part", "file")
            filename, purpose = upload.filename or "", str(form.get("purpose") or "")
            meta = await asyncio.to_thread(self.store.save_upload, filename, upload.file, purpose)
        finally:
            await form.close()
        return ok(file_object(meta))

    async def delete_file(self, request: Request) -> JSONResponse:
        file_id = request.path_params["file_id"]
        if self.results_file(file_id):
            raise RequestError(f"{file_id} is the results file of a fine-tuning job and part of its record; it "
                               "cannot be deleted", "file_id", 409, "file_in_use")
        async with self.files_lock:
            meta = self.store.get_file(file_id)
            if meta is None:
                raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
            users = await asyncio.to_thread(self.jobs_using, file_id)
            if users:
                raise RequestError(f"file {file_id} cannot be deleted: it is the {users[0][1]} of job {users[0][0]}, "
                                   f"which is {users[0][2]}; cancel the job or wait for it to end, then delete the "
                                   "file", "file_id", 409, "file_in_use")
            await asyncio.to_thread(self.store.delete_file, meta)
        logger.info("MeZO: deleted file %s (%s)", file_id, meta["filename"])
        return ok({"id": file_id, "object": "file", "deleted": True})

    def jobs_using(self, file_id: str) -> list[tuple[str, str, str]]:
        """(job id, which file, status) of every job not ended that names the file."""
        out = []
        for request, state in self.store.jobs():
            status = job_status(request, state)
            if status in FINAL:
                continue
            for key in ("training_file", "validation_file"):
                if request.get(key) == file_id:
                    out.append((request["id"], key, status))
        return out

    async def list_files(self, request: Request) -> JSONResponse:
        q = request.query_params
        files = [file_object(m) for m in self.store.list_files()]
        if q.get("purpose"):
            files = [m for m in files if m["purpose"] == q["purpose"]]
        return ok(page(files, q.get("after"), q.get("limit"), default=100))

    def results_file(self, file_id: str) -> Optional[tuple[dict, str]]:
        """(file object, CSV) of a job's results file (None: ``file_id`` names none)."""
        job_id = results_job_id(file_id)
        if job_id is None:
            return None
        request = self.store.request(job_id)
        content = self.store.results_csv(job_id) if request else None
        if content is None:
            return None
        return results_file_object(file_id, content, request, self.store.state(job_id)), content

    async def get_file(self, request: Request) -> JSONResponse:
        file_id = request.path_params["file_id"]
        results = self.results_file(file_id)
        if results:
            return ok(results[0])
        meta = self.store.get_file(file_id)
        if meta is None:
            raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
        return ok(file_object(meta))

    async def file_content(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        results = self.results_file(file_id)
        if results:
            return Response(results[1], media_type="text/csv")
        meta = self.store.get_file(file_id)
        if meta is None:
            raise RequestError(f"no such file: {file_id!r}", "file_id", 404)
        with open(self.store.file_path(meta), "rb") as f:
            return Response(f.read(), media_type="application/octet-stream")
