"""The shape the trainer keeps (issue 34): a short module whose step reads top to bottom, and no
branching on what kind of objective it holds (the objective measures itself)."""

from __future__ import annotations

import ast
import os

import sglang.srt.mezo.training as training

TRAINING = os.path.dirname(training.__file__)


def tree(name: str) -> ast.Module:
    with open(os.path.join(TRAINING, name)) as f:
        return ast.parse(f.read())


def test_trainer_is_short_and_its_methods_are_too():
    with open(os.path.join(TRAINING, "trainer.py")) as f:
        assert len(f.read().splitlines()) < 350
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree("trainer.py"))
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 60]
    assert long == []


def test_neither_trainer_nor_run_asks_what_kind_of_objective_it_has():
    for name in ("trainer.py", "run.py"):
        checks = [ast.unparse(n) for n in ast.walk(tree(name))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "isinstance"
                  and "Objective" in ast.unparse(n.args[1])]
        assert checks == [], name
