"""OpenAI's ``string_check`` grader: 1.0 if the rendered ``input`` and ``reference`` pass ``operation``, else 0.0.

``eq`` / ``ne``: exact (case-sensitive) equality / inequality; ``like``: ``input`` contains
``reference``; ``ilike``: the same, ignoring case. A reference that is a list of accepted texts
(``{{item.answers}}``) passes ``eq``, ``like`` and ``ilike`` if any entry does, ``ne`` if none is equal.

>>> g = StringCheckGrader("has", Template("{{sample.output_text}}"), Template("{{item.answers}}"), "ilike")
>>> g.score({"answers": ["Paris", "Lyon"]}, Sample("It is paris."))
1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from sglang.srt.mezo.data.graders.base import Grader, Sample, Template, check_keys, read_field, read_name, refuse

OPERATIONS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda text, ref: text == ref,
    "ne": lambda text, ref: text != ref,
    "like": lambda text, ref: ref in text,
    # casefold, not lower: "Straße" and "STRASSE" are the same word ignoring case.
    "ilike": lambda text, ref: ref.casefold() in text.casefold(),
}


class StringCheckGrader(Grader):
    """``input`` compared with ``reference`` by one of :data:`OPERATIONS`."""

    type = "string_check"

    def __init__(self, name: str, input: Template, reference: Template, operation: str):
        super().__init__(name)
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
        self.input, self.reference, self.operation = input, reference, operation

    def score(self, item: Mapping, sample: Sample) -> float:
        text = self.input.render(item, sample)
        refs = self.reference.render_options(item, sample)
        if self.operation == "ne":  # not equal to any accepted text
            return float(all(text != ref for ref in refs))
        check = OPERATIONS[self.operation]
        return float(any(check(text, ref) for ref in refs))

    def templates(self) -> list[Template]:
        return [self.input, self.reference]

    def to_dict(self) -> dict:
        return {"type": self.type, "name": self.name, "input": self.input.text, "reference": self.reference.text,
                "operation": self.operation}


def parse(obj: Mapping[str, Any], where: str) -> StringCheckGrader:
    """A :class:`StringCheckGrader` from its JSON object; ``where`` is the object's JSON path."""
    name = read_name(obj, where)
    check_keys(obj, where, name, {"input", "reference", "operation"})
    templates = [Template(read_field(obj, k, where, name), param=f"{where}.{k}", grader=name)
                 for k in ("input", "reference")]
    operation = read_field(obj, "operation", where, name)
    if operation not in OPERATIONS:
        raise refuse(name, f"{where}.operation is {operation!r}; use one of {', '.join(OPERATIONS)} (eq/ne: exact "
                     "equality, like: input contains reference, ilike: the same ignoring case)", f"{where}.operation")
    return StringCheckGrader(name, *templates, operation)
