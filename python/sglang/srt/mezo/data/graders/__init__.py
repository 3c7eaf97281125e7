"""Graders in OpenAI's JSON shapes, torch-free: a generated answer's grade in [0, 1] for a reward run.

Supported types: ``string_check`` (:mod:`.string_check`), ``text_similarity`` (:mod:`.text_similarity`,
with this project's own ``squad_f1`` beside OpenAI's metrics) and ``multi`` (:mod:`.multi`).
Templates read the row as ``{{item.<field>}}`` and the answer as ``{{sample.output_text}}``
(:mod:`.base`). ``score_model``, ``label_model`` and ``python`` graders are refused when parsed, with why.
Everything wrong with a grader is found by :func:`parse_grader`, or by :meth:`Grader.check_item` for a
row, before a model loads.

>>> grader = parse_grader({"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
...                        "reference": "{{item.answer}}", "operation": "eq"})
>>> grader.score({"answer": "Paris"}, Sample("Paris")), grader.score({"answer": "Paris"}, Sample("Lyon"))
(1.0, 0.0)
>>> grader.item_fields()
{'answer'}
>>> bad = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "x", "operation": "is"}
>>> parse_grader(bad)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sglang.srt.mezo.errors.GraderError: grader 'string_check': grader.operation is 'is'; use one of eq, ne, like, ilike ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sglang.srt.mezo.data.graders import multi, string_check, text_similarity
from sglang.srt.mezo.data.graders.base import Grader, Sample, Template
from sglang.srt.mezo.errors import GraderError

__all__ = ["Grader", "GraderError", "Sample", "SUPPORTED_TYPES", "Template", "parse_grader"]

#: The grader types :func:`parse_grader` accepts.
SUPPORTED_TYPES = ("string_check", "text_similarity", "multi")

# OpenAI's other types, each refused with the reason this server cannot offer it.
_JUDGE = ("it asks a judge model for the grade, and this server trains one model and runs no second one as a "
          "judge. Use string_check, text_similarity or multi")
_REFUSED = {
    "score_model": _JUDGE,
    "label_model": _JUDGE,
    "python": ("it runs the user's Python code, and running a user's code is not offered: it would need a "
               "sandbox, which this server does not have. Express the grade with string_check, text_similarity "
               "or multi"),
}


def parse_grader(obj: Any, where: str = "grader") -> Grader:
    """The :class:`Grader` of OpenAI's JSON object ``obj``; ``where`` is its JSON path, the prefix of
    every error's ``param`` (``grader.graders.f1.reference``). Raises :class:`GraderError`."""
    if not isinstance(obj, Mapping):
        raise GraderError(f"{where} is {type(obj).__name__}, expected a grader object such as "
                          '{"type": "string_check", "input": ..., "reference": ..., "operation": "eq"}', where)
    kind = obj.get("type")
    if not isinstance(kind, str):
        got = "missing" if "type" not in obj else f"{kind!r}, not a string"
        raise GraderError(f"{where}.type is {got}; give one of {', '.join(SUPPORTED_TYPES)}", f"{where}.type")
    if kind in _REFUSED:
        name = obj.get("name", kind)
        raise GraderError(f"grader {name!r}: {where}.type {kind!r} is not supported: {_REFUSED[kind]}",
                          f"{where}.type")
    if kind == "string_check":
        return string_check.parse(obj, where)
    if kind == "text_similarity":
        return text_similarity.parse(obj, where)
    if kind == "multi":
        return multi.parse(obj, where, parse_grader)
    raise GraderError(f"{where}.type {kind!r} is not a grader type; the supported types are "
                      f"{', '.join(SUPPORTED_TYPES)}", f"{where}.type")
