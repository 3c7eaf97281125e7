"""What every grader shares: the graded :class:`Sample`, the :class:`Template` of an ``input`` or
``reference`` field, the :class:`Grader` interface, and the readers of a grader object's fields.

A template reads the row being graded as ``{{item.<field>}}`` (a dotted path into nested objects)
and the generated answer as ``{{sample.output_text}}``, as OpenAI's graders do:

>>> t = Template("Q: {{ item.meta.q }} A: {{sample.output_text}}", param="grader.input", grader="g")
>>> sorted(t.fields)
['meta.q']
>>> t.render({"meta": {"q": "1+1?"}}, Sample("2"))
'Q: 1+1? A: 2'
>>> Template("{{item.answers}}").render_options({"answers": ["2", "two"]}, Sample(""))
['2', 'two']
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

from sglang.srt.mezo.errors import GraderError

SUPPORTED_PLACEHOLDERS = "{{item.<field>}} (a dotted path such as {{item.meta.answer}}) and {{sample.output_text}}"

# A field segment is anything but dots, spaces and braces: rows' keys need not be Python identifiers.
_ITEM_PATH = re.compile(r"item((?:\.[^.\s{}]+)+)")
_MISSING = object()


@dataclass(frozen=True)
class Sample:
    """The answer being graded, as ``{{sample.output_text}}`` reads it."""

    output_text: str


def _placeholders(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each ``{{...}}`` in ``text``, the shortest from each ``{{``, left to right.

    Two ``find`` calls a placeholder, linear in the text: the regex ``\\{\\{(.*?)\\}\\}`` that did this
    rescans the rest of the text from every ``{{`` that has no ``}}`` after it, and a request whose
    template was ``{{`` 100,000 times held the server's event loop for minutes.

    >>> list(_placeholders("a {{x}} b {{ y }}")), list(_placeholders("{{{{ }}")), list(_placeholders("{{" * 3))
    ([(2, 7), (10, 17)], [(0, 7)], [])
    """
    pos = 0
    while (start := text.find("{{", pos)) != -1 and (stop := text.find("}}", start + 2)) != -1:
        yield start, stop + 2
        pos = stop + 2


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (a row built in Python may hold anything)
        return str(value)


class Template:
    """A grader's ``input`` or ``reference`` text with its placeholders, checked when the grader is parsed.

    ``param`` is the field's JSON path and ``grader`` the grader's name, both for the errors.
    """

    def __init__(self, text: str, *, param: str = "template", grader: str = "grader"):
        if not isinstance(text, str):
            raise GraderError(f"grader {grader!r}: {param} is {type(text).__name__}, expected a string "
                              f"(a text with placeholders {SUPPORTED_PLACEHOLDERS})", param)
        self.text, self.param, self.grader = text, param, grader
        # The text split as literal, placeholder, literal, ...; a placeholder is a field path
        # tuple (item) or None (sample.output_text).
        self._parts: list[Union[str, Optional[tuple[str, ...]]]] = []
        end = 0
        for start, stop in _placeholders(text):
            self._parts += [text[end:start], self._placeholder(text[start + 2:stop - 2].strip())]
            end = stop
        self._parts.append(text[end:])

    def _placeholder(self, inner: str) -> Optional[tuple[str, ...]]:
        if inner == "sample.output_text":
            return None
        m = _ITEM_PATH.fullmatch(inner)
        if m:
            return tuple(m.group(1)[1:].split("."))
        hint = ""
        if inner.startswith("sample."):
            hint = " (the answer is only known as text here: structured outputs are not generated)"
        raise GraderError(f"grader {self.grader!r}: {self.param} uses {{{{{inner}}}}}, which is not supported"
                          f"{hint}; the supported placeholders are {SUPPORTED_PLACEHOLDERS}", self.param)

    @property
    def fields(self) -> set[str]:
        """The dotted paths of the item fields this template reads (``"meta.answer"`` for ``{{item.meta.answer}}``)."""
        return {".".join(p) for p in self._parts if isinstance(p, tuple)}

    @property
    def _single_field(self) -> Optional[tuple[str, ...]]:
        # Surrounding whitespace is ignored: " {{item.answers}}" still means the list of answers.
        literals, fields = self._parts[0::2], self._parts[1::2]
        if len(fields) == 1 and isinstance(fields[0], tuple) and not "".join(literals).strip():
            return fields[0]
        return None

    def _lookup(self, item: Mapping, path: tuple[str, ...], where: str) -> Any:
        field, of = "item." + ".".join(path), f" ({where})" if where else ""
        value: Any = item
        for depth, key in enumerate(path):
            if not isinstance(value, Mapping):
                problem = (f"in the item{of} item.{'.'.join(path[:depth])} is {type(value).__name__}, not an object"
                           if depth else f"the item{of} is {type(value).__name__}, not an object")
                break
            value = value.get(key, _MISSING)
            if value is _MISSING:
                problem = f"the item{of} has no such field"
                break
        else:
            return value
        raise GraderError(f"grader {self.grader!r}: {self.param} reads {field}, but {problem}. "
                          f"Add the field {field} to the rows or change the template {self.text!r}", self.param)

    def render(self, item: Mapping, sample: Sample, where: str = "") -> str:
        """The text with every placeholder replaced: strings as they are, other values as JSON
        (``true``, ``3``, ``["a", "b"]``); a missing field raises :class:`GraderError` naming ``where``."""
        out = []
        for i, part in enumerate(self._parts):
            if i % 2 == 0:
                out.append(part)
            elif part is None:
                out.append(sample.output_text)
            else:
                out.append(_value_text(self._lookup(item, part, where)))
        return "".join(out)

    def render_options(self, item: Mapping, sample: Sample, where: str = "") -> list[str]:
        """Each accepted text: the entries of a list of strings if the template is exactly one
        ``{{item.<field>}}`` holding one (SQuAD's several answers), else the one rendered text."""
        path = self._single_field
        if path is not None:
            value = self._lookup(item, path, where)
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                if not value:
                    of = f" ({where})" if where else ""
                    raise GraderError(f"grader {self.grader!r}: {self.param} reads item.{'.'.join(path)}, an empty "
                                      f"list in the item{of}; give at least one accepted text", self.param)
                return list(value)
        return [self.render(item, sample, where)]

    def check(self, item: Mapping, where: str) -> None:
        """Raise :class:`GraderError` if ``item`` lacks a field this template reads."""
        self.render_options(item, Sample(""), where)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


class Grader(ABC):
    """A grader parsed from OpenAI's JSON: :meth:`score` grades a sample against its item in [0, 1]."""

    #: The grader's ``type`` in OpenAI's JSON.
    type: str = ""

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def score(self, item: Mapping, sample: Sample) -> float:
        """The grade of ``sample`` (the generated answer) for ``item`` (its row's fields)."""

    @abstractmethod
    def to_dict(self) -> dict:
        """The grader as OpenAI's JSON object, normalised (``name`` always present); parses back to the same grader."""

    def templates(self) -> list[Template]:
        """Every template this grader renders, its sub-graders' included."""
        return []

    def item_fields(self) -> set[str]:
        """The dotted paths of every ``item`` field the grader's templates read."""
        return set().union(*(t.fields for t in self.templates()))

    def check_item(self, item: Mapping, where: str) -> None:
        """Raise :class:`GraderError` naming the grader, the missing field and ``where`` (e.g.
        ``"train.jsonl, line 3"``) if ``item`` lacks a field the grader reads."""
        if not isinstance(item, Mapping):
            raise GraderError(f"grader {self.name!r}: the item ({where}) is {type(item).__name__}, expected an object "
                              f"with the fields {', '.join(sorted(self.item_fields())) or '(none)'}")
        for template in self.templates():
            template.check(item, where)

    def sub_scores(self, item: Mapping, sample: Sample) -> dict[str, float]:
        """The scores worth reporting apart: ``{name: score}`` here, each sub-grader's for a multi grader."""
        return {self.name: self.score(item, sample)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


# ---------------------------------------------------------------- reading a grader object's fields
def refuse(name: str, message: str, param: str) -> GraderError:
    """The error of a grader object's field ``param``: ``grader 'name': message``."""
    return GraderError(f"grader {name!r}: {message}", param)


def check_keys(obj: Mapping, where: str, name: str, allowed: set[str]) -> None:
    """Refuse keys the grader type does not have (a misspelt optional field would otherwise be ignored)."""
    extra = sorted(set(obj) - allowed - {"type", "name"})
    if extra:
        param = f"{where}.{extra[0]}"
        raise refuse(name, f"{param} is not a field of a {obj['type']} grader; its fields are "
                     f"{', '.join(sorted(allowed | {'type', 'name'}))}", param)


def read_name(obj: Mapping, where: str) -> str:
    """The grader's ``name``: optional (the type stands in for it), a string when given."""
    name = obj.get("name", obj["type"])
    if not isinstance(name, str):
        raise GraderError(f"grader {obj['type']!r}: {where}.name is {_short(name)}, expected a string",
                          f"{where}.name")
    return name


def _kind_name(kind: type) -> str:
    return {int: "number", float: "number", str: "string", dict: "object", list: "list"}.get(kind, kind.__name__)


def read_field(obj: Mapping, key: str, where: str, name: str, kind: Union[type, tuple[type, ...]] = str,
               required: bool = True) -> Any:
    """``obj[key]`` checked to be a ``kind``; a missing or ill-typed field is refused naming its JSON path."""
    param = f"{where}.{key}"
    if key not in obj:
        if required:
            raise refuse(name, f"{param} is missing", param)
        return None
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int to Python, never a number in a grader's JSON.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(dict.fromkeys(_kind_name(k) for k in kinds))
        article = "an" if expected[0] in "aeiou" else "a"
        raise refuse(name, f"{param} is {_short(value)}, expected {article} {expected}", param)
    return value


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
