"""Objectives: what a batch is and what its loss is (:class:`~.base.Objective`).

Each objective is a class registered under the spec names it implements (``MeZOConfig.objective``);
what the layers above training know of it (its rows, default task, model kinds, OpenAI method,
metric names) is its entry in :mod:`sglang.srt.mezo.data.objective_table`, read before anything
loads. :func:`objective_for` builds the one a run's plan names.

A user's own objective needs no change here: subclass :class:`~.base.LogitsObjective` (a loss of
logits; or a built-in such as :class:`~.completion.CompletionObjective`, overriding ``loss``) or
:class:`~.reward.ScoredAnswersObjective` (a score of generated text: write ``score(answer, item)``), give it a classmethod
``from_plan(plan, name)`` (inherited from a built-in), and register it with one call,
:func:`register_objective`; or name it as ``"module:Class"`` (the CLI's ``--objective
mypkg:MyObjective``), which imports and registers it. README, "Your own objective or grader", has
a runnable example.

A built-in one is a module in this folder with ``@register("<name>")`` on its class, the module's
name in ``_MODULES`` below, and its entry in the table (a test keeps the two equal).

>>> sorted(name for name in registered() if objective_entry(name).builtin)
['accuracy', 'ce', 'completion', 'dpo', 'options', 'reward']
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Optional, Sequence

from sglang.srt.mezo.data.objective_table import (
    ROW_KINDS,
    ObjectiveEntry,
    add_objective,
    objective_entry,
    set_class_importer,
)

#: spec objective name -> the Objective class that implements it (filled by @register).
_REGISTRY: dict[str, type] = {}
#: The modules that register objectives, imported on first use.
_MODULES = ("label_words", "completion", "options", "dpo", "reward")


def register(*names: str) -> Callable[[type], type]:
    """Class decorator: the objective class implements the spec objectives ``names``."""

    def add(cls: type) -> type:
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise ValueError(f"objective {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
            _REGISTRY[name] = cls
        return cls

    return add


def registered() -> dict[str, type]:
    """Every registered objective, by spec name."""
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)


def objective_for(plan: Any):
    """The objective ``plan.config.objective`` names, built for ``plan``."""
    name = resolve_objective(plan.config.objective)
    objectives = registered()
    if name not in objectives:
        objective_entry(name)  # an unknown name: the table's error, which lists the known ones
        raise ValueError(f"objective {name!r} has an entry in the objective table but no class: register it "
                         "with register_objective(cls, name)")
    return objectives[name].from_plan(plan, name)


def register_objective(cls: type, name: Optional[str] = None, *, rows: Optional[Sequence[str]] = None,
                       model_kinds: Optional[Sequence[str]] = None, default_task: Optional[str] = None,
                       metrics: Optional[Sequence[str]] = None,
                       read_rows: Optional[Callable[[str], list]] = None) -> str:
    """Register a user's objective class under ``name`` (default ``"module:Class"``) and return the name.

    What it trains on and reports is taken from the nearest registered class it subclasses (a
    subclass of ``CompletionObjective`` reads chat files, as ``completion`` does), unless given:
    ``rows`` (row kinds, :data:`~sglang.srt.mezo.data.objective_table.ROW_KINDS`), ``model_kinds``,
    ``default_task``, ``metrics`` (default: ``cls.primary_metric``) and ``read_rows``. A name that is
    taken, a class that is not an :class:`~.base.Objective`, leaves abstract methods unwritten or has
    no ``from_plan`` raises an error that says so; registering the same class again is a no-op.

    >>> from sglang.srt.mezo.training.objectives.completion import CompletionObjective
    >>> class Smoothed(CompletionObjective):
    ...     pass
    >>> register_objective(Smoothed, "docstring_example_completion")
    'docstring_example_completion'
    >>> objective_entry("docstring_example_completion").openai_method
    'supervised'
    >>> register_objective(Smoothed, "completion")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: objective name 'completion' is taken (a built-in objective); register yours under another name
    """
    from sglang.srt.mezo.training.objectives.base import Objective  # noqa: PLC0415 -- base imports this package

    if not inspect.isclass(cls) or not issubclass(cls, Objective):
        raise TypeError(f"register_objective takes an Objective class, got {cls!r}: subclass LogitsObjective (a loss "
                        "of logits) or RewardObjective (a score of generated text), from "
                        "sglang.srt.mezo.training.objectives.base")
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        raise TypeError(f"objective class {cls.__qualname__} does not define {', '.join(missing)}: "
                        f"{_WHAT_TO_WRITE}")
    if not callable(getattr(cls, "from_plan", None)):
        raise TypeError(f"objective class {cls.__qualname__} has no classmethod from_plan(plan, name) that builds it "
                        "from a run's plan (plan.tokenizer, plan.config, ...); subclass a built-in objective to "
                        "inherit one, or write it")
    name = f"{cls.__module__}:{cls.__qualname__}" if name is None else name
    parent = _registered_parent(cls)
    if not rows and parent is None:
        raise ValueError(f"objective class {cls.__qualname__} subclasses no registered objective, so say which rows it "
                         "trains on: register_objective(cls, name, rows=(...)) with kinds from "
                         f"{list(ROW_KINDS)} (a score of generated text: rows=('prompts', 'completions'))")
    entry = ObjectiveEntry(
        name, tuple(rows or (parent.rows if parent else ())),
        tuple(model_kinds or (parent.model_kinds if parent else ("causal",))),
        tuple(metrics or (cls.primary_metric,)), parent.label_prompt if parent else False,
        default_task, read_rows)
    taken = _REGISTRY.get(name)
    reloaded = taken is not None and (taken.__module__, taken.__qualname__) == (cls.__module__, cls.__qualname__)
    if taken is not None and taken is not cls and not reloaded:
        owner = "a built-in objective" if objective_entry(name).builtin else \
            f"by {taken.__module__}.{taken.__qualname__}"
        raise ValueError(f"objective name {name!r} is taken ({owner}); register yours under another name")
    add_objective(entry)
    _REGISTRY[name] = cls
    return name


#: What a class of each family must write, for the error of one that leaves some abstract.
_WHAT_TO_WRITE = ("a LogitsObjective writes forward_inputs, loss and predict; a RewardObjective writes "
                  "generation_inputs, answers and rewards (or subclass a built-in: CompletionObjective, "
                  "GradedAnswersObjective)")


def _registered_parent(cls: type) -> Optional[ObjectiveEntry]:
    """The table entry of the nearest registered class ``cls`` subclasses, if any."""
    registry = registered()
    for base in cls.__mro__[1:]:
        for name, registered_cls in registry.items():
            if registered_cls is base:
                return objective_entry(name)
    return None


def resolve_objective(name: str) -> str:
    """``name`` if the table knows it; a ``"module:Class"`` name is imported and registered first
    (the run spec does this itself when this package is loaded: :func:`import_objective`).

    >>> resolve_objective("completion")
    'completion'
    >>> resolve_objective("no_such_module_here:Thing")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: objective 'no_such_module_here:Thing': module 'no_such_module_here' cannot be imported (...
    """
    registered()
    objective_entry(name)
    return name


def import_objective(name: str) -> None:
    """Import the class of a ``"module:Class"`` objective name and register it under that name
    (unless importing the module registered it)."""
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"objective {name!r}: module {module_name!r} cannot be imported ({e}); put it on "
                         "PYTHONPATH or install its package") from e
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise ValueError(f"objective {name!r}: module {module_name!r} has no {attr!r}")
    if name not in registered():
        register_objective(cls, name)


set_class_importer(import_objective)
