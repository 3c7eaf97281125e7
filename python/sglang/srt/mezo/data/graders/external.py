"""The ``external`` grader: the rewards of a reinforcement job's answers come from the job's client.

A server job whose grader is ``{"type": "external"}`` generates nothing itself: each step it
publishes its rollouts (the batch's prompts, and for each the perturbed adapter to answer with and
the sampling seed), the client answers them through ``/v1/chat/completions`` with whatever
environment it runs, and posts one reward per rollout
(:mod:`sglang.srt.mezo.server.external_rewards`). ``timeout_s`` is how long a step waits for its
rewards before the job pauses (it never fails for it; resuming waits again).

This grader scores nothing in the server: :meth:`ExternalGrader.score` refuses, saying where the
rewards come from, and it stands alone (not inside a ``multi`` grader).

>>> g = parse({"type": "external", "name": "env"}, "grader")
>>> g.to_dict()
{'type': 'external', 'name': 'env', 'timeout_s': 600.0}
>>> parse({"type": "external", "timeout_s": 0}, "grader")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sglang.srt.mezo.errors.GraderError: grader 'external': grader.timeout_s is 0; give the seconds ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sglang.srt.mezo.data.graders.base import Grader, Sample, check_keys, read_field, read_name, refuse
from sglang.srt.mezo.errors import GraderError

#: How long a step waits for its rewards by default before the job pauses (seconds).
DEFAULT_TIMEOUT_S = 600.0

TYPE = "external"


class ExternalGrader(Grader):
    """Rewards posted by the job's client; ``timeout_s``: how long a step waits for them."""

    type = TYPE

    def __init__(self, name: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__(name)
        self.timeout_s = timeout_s

    def score(self, item: Mapping, sample: Sample) -> float:
        raise GraderError(f"grader {self.name!r} is external: its rewards are posted by the client of a server job "
                          "(GET /v1/fine_tuning/jobs/{id}/rollouts, POST .../rollouts/rewards); nothing grades an "
                          "answer here, so it cannot be run or used outside a server job", "grader.type")

    def to_dict(self) -> dict:
        return {"type": self.type, "name": self.name, "timeout_s": self.timeout_s}


def parse(obj: Mapping, where: str) -> ExternalGrader:
    """An ``external`` grader object; refused inside another grader (a ``multi`` formula would need its
    grade now, and the client's comes later)."""
    name = read_name(obj, where)
    if ".graders." in where:
        raise refuse(name, f"{where} is an external grader inside a multi grader; an external grader stands alone "
                     "(the client computes the whole reward, combining whatever it likes)", f"{where}.type")
    check_keys(obj, where, name, {"timeout_s"})
    timeout = read_field(obj, "timeout_s", where, name, (int, float), required=False)
    if timeout is None:
        return ExternalGrader(name)
    if isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0:
        raise refuse(name, f"{where}.timeout_s is {timeout!r}; give the seconds a step waits for its rewards before "
                     f"the job pauses, a number > 0 (default {DEFAULT_TIMEOUT_S:g})", f"{where}.timeout_s")
    return ExternalGrader(name, float(timeout))


def is_external(grader: object) -> bool:
    """Whether ``grader`` (a grader object's JSON, or None) is an external grader.

    >>> is_external({"type": "external"}), is_external({"type": "multi"}), is_external(None)
    (True, False, False)
    """
    return isinstance(grader, Mapping) and grader.get("type") == TYPE
