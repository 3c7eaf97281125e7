"""Graders in OpenAI's JSON shapes, torch-free: a generated answer's grade in [0, 1] for a reward run.

Built-in types: ``string_check`` (:mod:`.string_check`), ``text_similarity`` (:mod:`.text_similarity`,
with this project's own ``squad_f1`` beside OpenAI's metrics), ``multi`` (:mod:`.multi`) and this
project's ``external`` (:mod:`.external`: the rewards come from a server job's client).
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

**A grader type of your own.** :func:`register_grader` adds a type that :func:`parse_grader` then
reads like a built-in one, inside ``multi`` graders too: a :class:`Grader` subclass (its ``type``,
:meth:`~Grader.score` and :meth:`~Grader.to_dict`) and the function that builds it from its JSON
object, ``parse(obj, where) -> Grader``, conventionally the class's ``from_object`` classmethod.
The readers of :mod:`.base` (``read_name``, ``read_field``, ``check_keys``) give its fields the
built-in types' errors. Register it when your module is imported, and name the module where the
run starts: ``--extension`` (CLI), ``--mezo-extensions`` (server), or an entry point of the group
``sglang_mezo.extensions`` (:mod:`sglang.srt.mezo.extensions`).

>>> class ShortAnswer(Grader):
...     type = "short_answer"
...     def __init__(self, name, max_chars):
...         super().__init__(name)
...         self.max_chars = max_chars
...     @classmethod
...     def from_object(cls, obj, where):
...         name = read_name(obj, where)
...         check_keys(obj, where, name, {"max_chars"})
...         return cls(name, read_field(obj, "max_chars", where, name, int))
...     def score(self, item, sample):
...         return float(len(sample.output_text) <= self.max_chars)
...     def to_dict(self):
...         return {"type": self.type, "name": self.name, "max_chars": self.max_chars}
>>> register_grader("short_answer", ShortAnswer.from_object)
>>> short = parse_grader({"type": "short_answer", "max_chars": 5})
>>> short.score({}, Sample("Paris")), short.score({}, Sample("Paris, France"))
(1.0, 0.0)
>>> "short_answer" in grader_types()
True
>>> register_grader("multi", ShortAnswer.from_object)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: grader type 'multi' is a built-in type; register yours under a name of its own, e.g. 'my_multi'
>>> unregister_grader("short_answer")
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable

from sglang.srt.mezo.data.graders import external, multi, string_check, text_similarity
from sglang.srt.mezo.data.graders.base import Grader, Sample, Template, check_keys, read_field, read_name
from sglang.srt.mezo.errors import GraderError

__all__ = ["Grader", "GraderError", "GraderParser", "Sample", "SUPPORTED_TYPES", "Template", "check_keys",
           "grader_types", "parse_grader", "read_field", "read_name", "register_grader", "unregister_grader"]

#: ``parse(obj, where) -> Grader``: a grader type's reader of its JSON object ``obj`` at JSON path ``where``.
GraderParser = Callable[[Mapping, str], Grader]

#: The built-in grader types (:func:`grader_types` adds the registered ones).
SUPPORTED_TYPES = ("string_check", "text_similarity", "multi", "external")

# OpenAI's other types, each refused with the reason this server cannot offer it.
_JUDGE = "it asks a judge model for the grade, and this server trains one model and runs no second one as a judge"
_REFUSED = {
    "score_model": _JUDGE,
    "label_model": _JUDGE,
    "python": ("it runs the user's Python code, and running a user's code is not offered: it would need a "
               "sandbox, which this server does not have"),
}

# What OpenAI's refused types' objects are, for the refusal of their names by register_grader.
_REFUSED_AS = {"score_model": "name a judge model", "label_model": "name a judge model",
               "python": "carry Python source to run (refused here: a request's code would run on the server)"}

# Registered types by name, in registration order: what register_grader adds to the built-ins.
_registered: dict[str, GraderParser] = {}


def grader_types() -> tuple[str, ...]:
    """Every type :func:`parse_grader` reads: the built-in ones, then the registered ones.

    >>> grader_types()[:3]
    ('string_check', 'text_similarity', 'multi')
    """
    return SUPPORTED_TYPES + tuple(_registered)


def _describe(parse: Callable) -> str:
    module = getattr(parse, "__module__", None)
    name = getattr(parse, "__qualname__", None) or type(parse).__qualname__
    return f"{module}.{name}" if module else name


def _same_parser(a: Callable, b: Callable) -> bool:
    # The same function, or its new version after the module was imported again (a reload, a
    # notebook cell run twice): the same module and qualified name.
    return a == b or (getattr(a, "__qualname__", None) is not None
                      and (a.__module__, a.__qualname__) == (getattr(b, "__module__", None),
                                                             getattr(b, "__qualname__", None)))


def register_grader(type_name: str, parse: GraderParser) -> None:
    """Make ``type_name`` a grader type: :func:`parse_grader` calls ``parse(obj, where)`` on an object
    ``{"type": type_name, ...}`` (``where`` its JSON path, ``"grader"`` or ``"grader.graders.<key>"``)
    and uses the :class:`Grader` it returns. ``parse`` raises :class:`GraderError` (or ``ValueError``)
    for a bad object; it is conventionally a Grader subclass's ``from_object`` classmethod, and the
    class's ``type`` must be ``type_name``. Registering the same ``parse`` again is a no-op.

    Raises ``TypeError`` for a name that is not a string or a ``parse`` that is not a function
    (a class given itself, or one that lacks ``score``/``to_dict``), ``ValueError`` for an empty name
    or one that is taken: a built-in type, OpenAI's refused ``score_model``/``label_model``/``python``,
    or another ``parse``'s. The module docstring has a complete example.

    >>> register_grader("", lambda obj, where: None)
    Traceback (most recent call last):
    ...
    ValueError: a grader type's name must be a non-empty string without surrounding spaces, e.g. 'word_count'; got ''
    """
    if not isinstance(type_name, str):
        raise TypeError(f"a grader type's name is a string such as 'word_count', got {type(type_name).__name__} "
                        f"{type_name!r}")
    if not type_name or type_name != type_name.strip():
        raise ValueError("a grader type's name must be a non-empty string without surrounding spaces, e.g. "
                         f"'word_count'; got {type_name!r}")
    if type_name in SUPPORTED_TYPES:
        raise ValueError(f"grader type {type_name!r} is a built-in type; register yours under a name of its own, "
                         f"e.g. 'my_{type_name}'")
    if type_name in _REFUSED:
        raise ValueError(f"grader type {type_name!r} is OpenAI's, whose objects {_REFUSED_AS[type_name]}; a type "
                         f"of your own runs your installed code and needs a name of its own, e.g. 'my_{type_name}'")
    if inspect.isclass(parse):
        hint = f"{parse.__name__}.from_object" if hasattr(parse, "from_object") else \
            f"a function (obj, where) -> {parse.__name__}, e.g. a classmethod {parse.__name__}.from_object"
        raise TypeError(f"register_grader({type_name!r}, ...) takes the function that builds the grader from its "
                        f"JSON object, not the class {parse.__name__}: give {hint}")
    if not callable(parse):
        raise TypeError(f"register_grader({type_name!r}, ...) takes a function parse(obj, where) -> Grader, got "
                        f"{type(parse).__name__} {parse!r}")
    try:
        inspect.signature(parse).bind({}, "grader")
    except TypeError as e:  # would fail at every parse, and look like the request's fault there
        raise TypeError(f"register_grader({type_name!r}, {_describe(parse)}): parse is called as parse(obj, where) "
                        f"(the grader's JSON object and its JSON path), which this one cannot take: {e}") from None
    except ValueError:  # no signature to read (a builtin): it will tell when called
        pass
    owner = getattr(parse, "__self__", None)
    if inspect.isclass(owner):  # a classmethod such as WordCountGrader.from_object: check its class now
        _check_class(type_name, owner)
    taken = _registered.get(type_name)
    if taken is not None and not _same_parser(taken, parse):
        raise ValueError(f"grader type {type_name!r} is already registered by {_describe(taken)}; register "
                         f"{_describe(parse)} under another name, or unregister_grader({type_name!r}) first")
    _registered[type_name] = parse


def _check_class(type_name: str, cls: type) -> None:
    if not issubclass(cls, Grader):
        raise TypeError(f"grader type {type_name!r}: {cls.__name__} is not a subclass of "
                        "sglang.srt.mezo.data.graders.Grader; derive it from Grader and define score(item, sample) "
                        "-> float and to_dict() -> dict")
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise TypeError(f"grader type {type_name!r}: {cls.__name__} does not define {', '.join(missing)}; a Grader "
                        "defines score(item, sample) -> float (the grade in [0, 1]) and to_dict() -> dict (its JSON "
                        "object, which parses back to the same grader)")
    if cls.type != type_name:
        raise TypeError(f"grader type {type_name!r}: {cls.__name__}.type is {cls.type!r}; set type = {type_name!r} on "
                        "the class (to_dict() writes it, and the object must parse back to the same grader)")


def unregister_grader(type_name: str) -> None:
    """Remove a type :func:`register_grader` added (for tests, or to register another ``parse``
    under its name); a built-in type or a name never registered is a ``ValueError``.

    >>> unregister_grader("string_check")
    Traceback (most recent call last):
    ...
    ValueError: grader type 'string_check' was not registered (it is built in); the registered types are ...
    """
    if type_name not in _registered:
        built_in = " (it is built in)" if type_name in SUPPORTED_TYPES else ""
        raise ValueError(f"grader type {type_name!r} was not registered{built_in}; the registered types are "
                         f"{', '.join(_registered) or '(none)'}")
    del _registered[type_name]


def _parse_registered(kind: str, parse: GraderParser, obj: Mapping, where: str) -> Grader:
    try:
        grader = parse(obj, where)
    except GraderError:
        raise
    except TypeError as e:
        if "abstract" in str(e):  # Python's "Can't instantiate abstract class X ...": a method is missing
            raise TypeError(f"grader type {kind!r} ({_describe(parse)}): {e}. A Grader defines score(item, sample) "
                            "-> float and to_dict() -> dict") from e
        raise GraderError(f"grader {obj.get('name', kind)!r}: {where} is not a valid {kind} grader: {e}",
                          where) from e
    except (ValueError, KeyError) as e:
        raise GraderError(f"grader {obj.get('name', kind)!r}: {where} is not a valid {kind} grader: "
                          f"{type(e).__name__ + ' ' if isinstance(e, KeyError) else ''}{e}", where) from e
    if not isinstance(grader, Grader):
        raise TypeError(f"grader type {kind!r}: {_describe(parse)} returned {type(grader).__name__}, not a Grader; "
                        "it must return an instance of a subclass of sglang.srt.mezo.data.graders.Grader")
    if grader.type != kind:
        raise TypeError(f"grader type {kind!r}: {_describe(parse)} returned a {type(grader).__name__} whose type is "
                        f"{grader.type!r}; set type = {kind!r} on the class (to_dict() writes it, and the object "
                        "must parse back to the same grader)")
    return grader


def parse_grader(obj: Any, where: str = "grader") -> Grader:
    """The :class:`Grader` of OpenAI's JSON object ``obj``; ``where`` is its JSON path, the prefix of
    every error's ``param`` (``grader.graders.f1.reference``). Raises :class:`GraderError`."""
    if not isinstance(obj, Mapping):
        raise GraderError(f"{where} is {type(obj).__name__}, expected a grader object such as "
                          '{"type": "string_check", "input": ..., "reference": ..., "operation": "eq"}', where)
    kind = obj.get("type")
    types = ", ".join(grader_types())
    if not isinstance(kind, str):
        got = "missing" if "type" not in obj else f"{kind!r}, not a string"
        raise GraderError(f"{where}.type is {got}; give one of {types}", f"{where}.type")
    if kind in _REFUSED:
        name = obj.get("name", kind)
        instead = f"Use {_one_of(grader_types())}"
        if kind == "python":  # the one an operator's own code can stand in for
            instead = (f"Express the grade with {_one_of(grader_types())}; whoever runs the server can also install "
                       "a grader type of their own (register_grader, --mezo-extensions)")
        raise GraderError(f"grader {name!r}: {where}.type {kind!r} is not supported: {_REFUSED[kind]}. {instead}",
                          f"{where}.type")
    if kind == "string_check":
        return string_check.parse(obj, where)
    if kind == "text_similarity":
        return text_similarity.parse(obj, where)
    if kind == "multi":
        return multi.parse(obj, where, parse_grader)
    if kind == external.TYPE:
        return external.parse(obj, where)
    if kind in _registered:
        return _parse_registered(kind, _registered[kind], obj, where)
    raise GraderError(f"{where}.type {kind!r} is not a grader type; the supported types are {types}"
                      + ("" if _registered else " (a type of your own is added with register_grader)"),
                      f"{where}.type")


def _one_of(types: tuple[str, ...]) -> str:
    return ", ".join(types[:-1]) + " or " + types[-1]
