"""OpenAI's grader endpoints, torch-free: try a grader before training with it.

- ``POST /v1/fine_tuning/alpha/graders/validate`` with ``{"grader": {...}}`` answers
  ``{"grader": <the grader, normalised>}``, or a 400 naming the grader's bad field;
- ``POST /v1/fine_tuning/alpha/graders/run`` with ``{"grader": {...}, "model_sample": "<an answer>",
  "item": {<a training row's fields>}}`` answers OpenAI's ``GraderRunResponse``: ``reward``,
  ``metadata`` (``name``, ``type``, ``errors``, ``execution_time``, ``scores``), ``sub_rewards``.

A grader or an item the grader cannot use is a 400 with the field's JSON path as ``param``
(``grader.graders.f1.reference``, ``item``), the same check a reinforcement job's rows get.

>>> grader = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
...           "reference": "{{item.answer}}", "operation": "eq"}
>>> answer = run_grader({"grader": grader, "model_sample": "Paris", "item": {"answer": "Paris"}})
>>> answer["reward"], answer["metadata"]["name"], answer["metadata"]["errors"]["invalid_variable_error"]
(1.0, 'exact', False)
>>> validate_grader({"grader": grader})["grader"]["operation"]
'eq'
"""

from __future__ import annotations

import time
from typing import Any

from sglang.srt.mezo.data.graders import Grader, Sample, parse_grader
from sglang.srt.mezo.errors import GraderError, RequestError

#: OpenAI's error flags of a grader run; this server answers a failing run with a 400 instead, so
#: a run that answers has none of them set.
_NO_ERRORS = {
    "formula_parse_error": False, "invalid_variable_error": False, "model_grader_parse_error": False,
    "model_grader_refusal_error": False, "model_grader_server_error": False,
    "model_grader_server_error_details": None, "other_error": False, "python_grader_runtime_error": False,
    "python_grader_runtime_error_details": None, "python_grader_server_error": False,
    "python_grader_server_error_type": None, "sample_parse_error": False, "truncated_observation_error": False,
    "unresponsive_reward_error": False,
}


def request_grader(obj: Any, where: str) -> Grader:
    """The grader of a request's JSON ``obj`` at JSON path ``where``; a :class:`RequestError` (400,
    ``param`` the bad field's path) when it cannot be used."""
    try:
        return parse_grader(obj, where)
    except GraderError as e:
        raise RequestError(e.message, e.param or where) from None


def _body(body: Any, allowed: set[str], required: set[str]) -> dict:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; a grader request has {sorted(allowed)}", unknown[0])
    for key in sorted(required - set(body)):
        raise RequestError(f"{key} is required", key)
    return body


def validate_grader(body: Any) -> dict:
    """``{"grader": ...}`` checked: the grader as this server reads it (every default filled in)."""
    body = _body(body, {"grader"}, {"grader"})
    return {"grader": request_grader(body["grader"], "grader").to_dict()}


def run_grader(body: Any) -> dict:
    """Grade ``model_sample`` against ``item`` with ``grader``: OpenAI's ``GraderRunResponse``."""
    body = _body(body, {"grader", "model_sample", "item"}, {"grader", "model_sample"})
    grader = request_grader(body["grader"], "grader")
    sample, item = body["model_sample"], body.get("item", {})
    if not isinstance(sample, str):
        raise RequestError(f"model_sample must be the answer's text (a string), got {type(sample).__name__}",
                           "model_sample")
    start = time.perf_counter()
    try:
        grader.check_item(item, "the request's item")
        reward = grader.score(item, Sample(sample))
        scores = grader.sub_scores(item, Sample(sample))
    except GraderError as e:
        raise RequestError(e.message, e.param or "item") from None
    return {
        "reward": reward,
        "metadata": {"name": grader.name, "type": grader.type, "errors": dict(_NO_ERRORS),
                     "execution_time": time.perf_counter() - start, "scores": scores, "token_usage": None,
                     "sampled_model_name": None},
        "sub_rewards": scores,
        "model_grader_token_usage_per_model": {},
    }
