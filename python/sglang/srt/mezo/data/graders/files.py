"""A grader given by the user as a file (the CLI's ``--grader``) or as the JSON text of one."""

from __future__ import annotations

import json
import os

from sglang.srt.mezo.errors import GraderError


def read_grader_file(source: str) -> dict:
    """The grader object in the JSON file ``source`` (or ``source`` itself, if it is a JSON object's text).

    >>> read_grader_file('{"type": "string_check", "input": "{{sample.output_text}}", "reference": "yes", "operation": "eq"}')["type"]
    'string_check'
    """
    if source.lstrip().startswith("{"):
        where, text = "the grader given as JSON text", source
    else:
        where = source
        if not os.path.isfile(source):
            raise GraderError(f"grader file {source} does not exist: give the path of a JSON file holding one grader "
                              "object (or the object's JSON text)", "grader")
        with open(source, encoding="utf-8") as f:
            text = f.read()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraderError(f"{where}: not JSON ({e.msg} at line {e.lineno}, column {e.colno}); a grader is one JSON "
                          'object such as {"type": "string_check", ...}', "grader") from None
    if not isinstance(obj, dict):
        raise GraderError(f"{where}: holds {type(obj).__name__}, expected one grader object", "grader")
    return obj
