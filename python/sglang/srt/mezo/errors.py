"""The errors sglang-mezo raises on purpose, in one place: each says what is wrong and how to fix it."""

from __future__ import annotations

from typing import Optional


class DataFormatError(ValueError):
    """Data could not be turned into examples; the message names file, 1-based line and a fix."""


class MeZODivergedError(RuntimeError):
    """The loss stopped being a finite number; the weights are left as they were before the step."""


class RequestError(Exception):
    """A bad request: HTTP ``status`` with an OpenAI-style error body naming ``param``."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400, code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status
        self.code = code or ("not_found" if status == 404 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": "invalid_request_error",
                          "param": self.param, "code": self.code}}


class WorkerFailure(RuntimeError):
    """Another worker of the data-parallel group died or stopped answering."""


class GraderError(ValueError):
    """A grader that cannot be used; the message names the grader, the field and a fix.

    ``param`` is the JSON path of the offending field, e.g. ``"grader.calculate_output"`` or
    ``"grader.graders.exact.operation"``.
    """

    def __init__(self, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.message, self.param = message, param


class ExtensionError(ImportError):
    """A user's extension module (``--extension``, ``--mezo-extensions``, an entry point of the group
    ``sglang_mezo.extensions``) could not be imported; the message names it and what to check."""
