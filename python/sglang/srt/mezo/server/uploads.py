"""``POST /v1/files`` bodies read within ``--mezo-max-upload-mb``: refused from the Content-Length
header before a byte is read when it already says too much, and stopped after the limit when it
does not (a chunked body, or a header that lies). The file part is spooled to a temporary file by
Starlette's multipart parser, never held whole in memory, and nothing reaches the store unless the
whole body was within the limit."""

from __future__ import annotations

from typing import AsyncIterator, Mapping

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from sglang.srt.mezo.errors import RequestError

FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and the 'purpose' field around the file


class UploadTooLarge(RequestError):
    """HTTP 413: an upload over the server's limit."""

    def __init__(self, limit: int, size: int | None = None):
        said = f"is {size} bytes" if size is not None else "goes on past the limit"
        super().__init__(f"the upload {said}, more than this server takes: {limit} bytes ({limit / 2**20:g} MiB, "
                         "set by the launch flag --mezo-max-upload-mb); split the data or ask for a larger limit",
                         "file", 413, "file_too_large")


def check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    """Refuse a body whose Content-Length is over the limit, before reading any of it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD_BYTES:
        raise UploadTooLarge(limit, int(declared))


async def _within(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit + FORM_OVERHEAD_BYTES:
            raise UploadTooLarge(limit)
        yield chunk


async def read_upload_form(request: Request, limit: int) -> FormData:
    """The multipart form of ``request`` (a Starlette ``FormData``; close it when done), read
    within ``limit`` bytes for the file. Raises :class:`UploadTooLarge` or a 400 RequestError."""
    check_declared_length(request.headers, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(f"expected a multipart form with 'file' and 'purpose', got Content-Type "
                           f"{content_type or '(none)'!r}", "file")
    parser = MultiPartParser(request.headers, _within(request.stream(), limit))
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise RequestError(f"expected a multipart form with 'file' and 'purpose' ({e.message})", "file") from None
    upload = form.get("file")
    size = getattr(upload, "size", None)
    if size is not None and size > limit:
        await form.close()
        raise UploadTooLarge(limit, size)
    return form
