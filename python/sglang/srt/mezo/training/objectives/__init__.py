"""Objectives: what a batch is and what its loss is (:class:`~.base.Objective`).

Each objective is one module in this folder, registered under the spec names it implements
(``MeZOConfig.objective``); :func:`objective_for` builds the one a run's plan names. To add one:

1. write ``objectives/<name>.py`` with a subclass of :class:`~.base.LogitsObjective` (or
   :class:`~.base.RewardObjective`) and a classmethod ``from_plan(plan, name)`` that builds it from a
   :class:`~sglang.srt.mezo.training.plan.RunPlan`;
2. put ``@register("<name>")`` on the class, and the module's name in ``_MODULES`` below;
3. add ``"<name>"`` to ``ObjectiveName``, the Literal in :mod:`sglang.srt.mezo.run_spec.config` (the spec is
   torch-free and checked before anything loads; a test keeps the two lists equal).

>>> sorted(registered())
['accuracy', 'ce', 'completion', 'dpo', 'options', 'reward']
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

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
    name = plan.config.objective
    objectives = registered()
    if name not in objectives:
        raise ValueError(f"unknown objective {name!r}: choose one of {sorted(objectives)}")
    return objectives[name].from_plan(plan, name)
