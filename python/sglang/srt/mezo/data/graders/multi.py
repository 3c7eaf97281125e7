"""OpenAI's ``multi`` grader: named sub-graders combined by the formula ``calculate_output``.

The formula is an arithmetic expression over the sub-graders' keys, evaluated by ``simpleeval``
(never Python's ``eval``): numbers, ``+ - * / // % **``, comparisons, ``and``/``or``/``not``,
``x if cond else y`` and the functions ``min``, ``max``, ``abs`` and ``round``. It is checked when the
grader is parsed: a syntax error or a name that is no sub-grader's key is refused then, not mid-run.

>>> from sglang.srt.mezo.data.graders.string_check import StringCheckGrader
>>> has = StringCheckGrader("has", Template("{{sample.output_text}}"), Template("{{item.answer}}"), "ilike")
>>> exact = StringCheckGrader("exact", Template("{{sample.output_text}}"), Template("{{item.answer}}"), "eq")
>>> g = MultiGrader("both", {"has": has, "exact": exact}, "0.25 * has + 0.75 * exact")
>>> g.score({"answer": "Paris"}, Sample("paris")), g.sub_scores({"answer": "Paris"}, Sample("paris"))
(0.25, {'has': 1.0, 'exact': 0.0})
"""

from __future__ import annotations

import ast
import keyword
import math
import operator
import warnings
from collections.abc import Mapping
from typing import Any, Callable

from sglang.srt.mezo.data.graders.base import Grader, Sample, Template, check_keys, read_field, read_name, refuse
from sglang.srt.mezo.errors import GraderError

FUNCTIONS: dict[str, Callable] = {"min": min, "max": max, "abs": abs, "round": round}
#: The operators a formula may use; simpleeval's own safe versions of +, * and ** stand in when it
#: evaluates (they cap huge powers and products): :func:`_operators`.
OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
    ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_,
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def _operators() -> dict:
    # Imported here, not at the top: the data layer's modules import without third-party packages.
    import simpleeval  # noqa: PLC0415

    return {**OPERATORS, ast.Add: simpleeval.safe_add, ast.Mult: simpleeval.safe_mult, ast.Pow: simpleeval.safe_power}
# The expression nodes a formula may hold, beside its operators: no attributes, subscripts, strings,
# comprehensions or keyword arguments.
_NODES = (ast.Expression, ast.Expr, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.And,
          ast.Or, ast.Compare, ast.IfExp, ast.Call, *OPERATORS)
_ALLOWED = "numbers, + - * / // % **, comparisons, and/or/not, x if c else y, and min, max, abs, round"


class MultiGrader(Grader):
    """Sub-graders (``graders``, by key) whose scores ``calculate_output`` combines into one float."""

    type = "multi"

    def __init__(self, name: str, graders: Mapping[str, Grader], calculate_output: str, param: str = "grader"):
        super().__init__(name)
        self.graders = dict(graders)
        self.calculate_output = calculate_output
        self._param = f"{param}.calculate_output"
        self._tree = self._check_formula()

    def _fail(self, message: str) -> GraderError:
        return refuse(self.name, f"{self._param} {self.calculate_output!r}: {message}", self._param)

    def _check_formula(self) -> ast.AST:
        import simpleeval  # noqa: PLC0415 - not at the top: see _operators

        keys = ", ".join(self.graders)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", simpleeval.MultipleExpressions)
                tree = simpleeval.SimpleEval.parse(self.calculate_output)
        except SyntaxError as e:
            raise self._fail(f"not a formula ({e.msg}); write one such as '0.5 * {next(iter(self.graders))} + ...' "
                             f"over the sub-graders' keys ({keys})") from None
        except (simpleeval.InvalidExpression, simpleeval.MultipleExpressions):
            raise self._fail(f"expected one expression over the sub-graders' keys ({keys})") from None
        except (RecursionError, MemoryError):  # Python's parser gives up on a formula this long or nested
            raise self._fail(f"is too long or too deeply nested for Python's parser ({len(self.calculate_output)} "
                             f"characters); write a short formula over the sub-graders' keys ({keys})") from None
        # Unknown names first: they are the likeliest mistake (a misspelt key) and the clearest to report.
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id not in self.graders and node.id not in FUNCTIONS:
                raise self._fail(f"unknown name {node.id!r}; the names are the sub-graders' keys ({keys}) and the "
                                 f"functions {', '.join(FUNCTIONS)}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                                                   and not node.keywords):
                raise self._fail(f"only {', '.join(FUNCTIONS)} can be called (without keyword arguments)")
            if isinstance(node, ast.Constant) and (isinstance(node.value, bool)
                                                   or not isinstance(node.value, (int, float))):
                raise self._fail(f"{node.value!r} is not a number; a formula holds {_ALLOWED}")
            if not isinstance(node, _NODES):
                raise self._fail(f"{type(node).__name__} is not allowed; a formula holds {_ALLOWED}")
        # A trial run with every sub-score 1.0 catches what the syntax allows but evaluation does not
        # (a sub-grader's key called as a function, min() of nothing, ...).
        try:
            self._evaluate(tree, dict.fromkeys(self.graders, 1.0))
        except ZeroDivisionError:  # depends on the scores, checked when it happens
            pass
        except GraderError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the formula does wrong, the user must see it now
            raise self._fail(f"cannot be evaluated ({type(e).__name__}: {e}); a formula holds {_ALLOWED}") from None
        return tree

    def _evaluate(self, tree: ast.AST, scores: dict[str, float]) -> float:
        import simpleeval  # noqa: PLC0415 - not at the top: see _operators

        evaluator = simpleeval.SimpleEval(operators=_operators(), functions=FUNCTIONS, names=scores)
        value = evaluator.eval(self.calculate_output, previously_parsed=tree)
        if not isinstance(value, (int, float)):
            raise self._fail(f"gives {type(value).__name__} {value!r}, not a number")
        return float(value)

    def sub_scores(self, item: Mapping, sample: Sample) -> dict[str, float]:
        """Each sub-grader's score, by its key."""
        return {key: grader.score(item, sample) for key, grader in self.graders.items()}

    def score(self, item: Mapping, sample: Sample) -> float:
        scores = self.sub_scores(item, sample)
        try:
            value = self._evaluate(self._tree, scores)
        except (ZeroDivisionError, OverflowError, ValueError) as e:
            raise self._fail(f"failed on the sub-scores {scores} ({type(e).__name__}: {e})") from None
        if not math.isfinite(value):
            raise self._fail(f"gives {value} on the sub-scores {scores}, not a finite number")
        return value

    def templates(self) -> list[Template]:
        return [t for grader in self.graders.values() for t in grader.templates()]

    def to_dict(self) -> dict:
        return {"type": self.type, "name": self.name,
                "graders": {key: grader.to_dict() for key, grader in self.graders.items()},
                "calculate_output": self.calculate_output}


#: How deep multi graders may nest (a multi grader inside a multi grader is depth 2). OpenAI's own
#: examples nest once; a bound keeps a hostile request from exhausting the parser's stack.
MAX_DEPTH = 8


def parse(obj: Mapping[str, Any], where: str, parse_grader: Callable[[Any, str], Grader]) -> MultiGrader:
    """A :class:`MultiGrader` from its JSON object; ``where`` is the object's JSON path and
    ``parse_grader(obj, where)`` parses each sub-grader."""
    name = read_name(obj, where)
    # ``where`` grows by ".graders.<key>" a level: its count is this grader's depth less one.
    if where.count(".graders.") >= MAX_DEPTH:
        raise refuse(name, f"{where} nests multi graders more than {MAX_DEPTH} deep; flatten them into one multi "
                     "grader whose calculate_output combines the sub-graders", where)
    check_keys(obj, where, name, {"graders", "calculate_output"})
    graders = read_field(obj, "graders", where, name, dict)
    if not graders:
        raise refuse(name, f"{where}.graders is empty; give at least one sub-grader by key, e.g. "
                     '{"exact": {"type": "string_check", ...}}', f"{where}.graders")
    subs = {}
    for key, sub in graders.items():
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key) or key in FUNCTIONS:
            raise refuse(name, f"{where}.graders key {key!r} cannot be named in calculate_output: a key is a name "
                         "such as 'exact' or 'f1' (letters, digits, underscores; not a Python keyword nor "
                         f"{', '.join(FUNCTIONS)})", f"{where}.graders")
        subs[key] = parse_grader(sub, f"{where}.graders.{key}")
    formula = read_field(obj, "calculate_output", where, name)
    return MultiGrader(name, subs, formula, param=where)
