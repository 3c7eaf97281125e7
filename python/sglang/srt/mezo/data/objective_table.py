"""What each objective needs and gives, by name: the one table the run spec, the data splits, the plan
and the server read instead of comparing objective names. Torch-free, so the spec checks a run
before anything loads; the classes that compute each objective are registered beside it
(:mod:`sglang.srt.mezo.training.objectives`), and :func:`add_objective` is how a user's own
objective joins it (``register_objective`` there calls it).

A task's rows are of one :data:`ROW_KINDS` kind (its default objective's first), and an objective
trains on the kinds it lists:

>>> entry = objective_entry("reward")
>>> entry.rows, entry.default_task, entry.openai_method, entry.metrics[0]
(('prompts', 'completions'), 'reinforcement', 'reinforcement', 'eval_reward')
>>> [e.name for e in objectives_for_rows("labels") if e.builtin]
['ce', 'accuracy', 'options']
>>> objective_entry("f1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown objective 'f1': choose one of ['accuracy', 'ce', ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple, Optional

#: The shapes of a task's rows.
RowKind = Literal["labels", "options", "completions", "preferences", "prompts"]

#: A model kind an objective can train (``engine.models.model_kind``).
ModelKind = Literal["masked", "causal"]

#: OpenAI's fine-tuning methods, each the way a server job asks for one row kind.
OpenAIMethod = Literal["supervised", "dpo", "reinforcement"]


class RowKindInfo(NamedTuple):
    """What rows of one kind are: how an error describes them, the task that reads them by default,
    the OpenAI method a server job uses for them, and how k-shot sampling picks them (``per_class``:
    k examples of each class; ``rows``: k rows, seeded)."""

    description: str
    default_task: str
    openai_method: OpenAIMethod
    k_shot: Literal["per_class", "rows"]


ROW_KINDS: dict[str, RowKindInfo] = {
    "labels": RowKindInfo("its classes are label words (objective 'completion' is for task 'squad' or a "
                          "chat/prompt-completion file, task 'chat')", "sst-2", "supervised", "per_class"),
    "options": RowKindInfo("its options are each example's own choices", "arc-easy", "supervised", "per_class"),
    "completions": RowKindInfo("its answers are generated text", "chat", "supervised", "rows"),
    "preferences": RowKindInfo("its rows are preference pairs", "preference", "dpo", "rows"),
    "prompts": RowKindInfo("its rows are prompts for a grader", "reinforcement", "reinforcement", "rows"),
}


@dataclass(frozen=True)
class ObjectiveEntry:
    """One objective, as everything above the training layer knows it.

    ``rows``: the row kinds it trains on (the first is its own); ``default_task``: the task of a run
    that names only the objective (default: its row kind's); ``model_kinds``: what it can train;
    ``metrics``: its evaluation metrics, the first the headline that picks the best checkpoint;
    ``label_prompt``: its rows pass through the label-word prompt (template, one-token label words);
    ``read_rows``: reads a file of its rows (default: its row kind's reader, data/sampling.py).
    """

    name: str
    rows: tuple[RowKind, ...]
    model_kinds: tuple[ModelKind, ...] = ("causal",)
    metrics: tuple[str, ...] = ("eval_accuracy",)
    label_prompt: bool = False
    default_task: Optional[str] = None
    read_rows: Optional[Callable[[str], list]] = None
    builtin: bool = False

    def __post_init__(self) -> None:
        where = f"objective {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(f"an objective's name must be a non-empty string without surrounding spaces, "
                             f"got {self.name!r}")
        if not self.rows or any(r not in ROW_KINDS for r in self.rows):
            raise ValueError(f"{where}: rows {list(self.rows)} must name one or more of {list(ROW_KINDS)} "
                             "(the data shapes a run reads)")
        if not self.model_kinds or any(k not in ("masked", "causal") for k in self.model_kinds):
            raise ValueError(f"{where}: model_kinds {list(self.model_kinds)} must name 'causal' and/or 'masked'")
        if not self.metrics or not all(isinstance(m, str) and m.startswith("eval_") for m in self.metrics):
            raise ValueError(f"{where}: metrics {list(self.metrics)} must be evaluation metric names starting "
                             "with 'eval_' (the first is the one the best checkpoint is chosen by)")
        if self.read_rows is not None and not callable(self.read_rows):
            raise ValueError(f"{where}: read_rows must be a function from a file's path to its rows")
        if self.default_task is None:
            object.__setattr__(self, "default_task", ROW_KINDS[self.rows[0]].default_task)

    @property
    def openai_method(self) -> OpenAIMethod:
        """The OpenAI method a server job trains it with (its own row kind's)."""
        return ROW_KINDS[self.rows[0]].openai_method

    @property
    def k_shot(self) -> str:
        """How its training rows are sampled: ``per_class`` or ``rows``."""
        return ROW_KINDS[self.rows[0]].k_shot


_TABLE: dict[str, ObjectiveEntry] = {e.name: e for e in (
    ObjectiveEntry("ce", ("labels",), ("masked", "causal"), label_prompt=True, builtin=True),
    ObjectiveEntry("accuracy", ("labels",), ("masked", "causal"), label_prompt=True, builtin=True),
    # "options" scores label words of several tokens too; a run naming only it keeps sst-2, as before.
    ObjectiveEntry("options", ("options", "labels"), default_task="sst-2", builtin=True),
    ObjectiveEntry("completion", ("completions",), metrics=("eval_f1", "eval_exact_match"), builtin=True),
    ObjectiveEntry("dpo", ("preferences",), metrics=("eval_rewards/accuracies", "eval_rewards/margins"),
                   builtin=True),
    ObjectiveEntry("reward", ("prompts", "completions"), metrics=("eval_reward",), builtin=True),
)}


def objective_names() -> list[str]:
    """Every objective a run may name, built-in and registered, sorted."""
    return sorted(_TABLE)


#: Called with a ``"module:Class"`` name the table lacks, to import and register it: the training
#: layer installs it (:func:`set_class_importer`), since importing a user's class imports torch.
_importer: Optional[Callable[[str], object]] = None


def set_class_importer(importer: Optional[Callable[[str], object]]) -> None:
    """Install what :func:`objective_entry` calls for a ``"module:Class"`` name it does not know."""
    global _importer
    _importer = importer


def objective_entry(name: str) -> ObjectiveEntry:
    """The entry of objective ``name``; an unknown name is a ValueError that lists the known ones.
    A ``"module:Class"`` name is imported and registered first, where the training layer is loaded."""
    if name not in _TABLE and isinstance(name, str) and ":" in name and _importer is not None:
        _importer(name)
    if name not in _TABLE:
        raise ValueError(f"unknown objective {name!r}: choose one of {objective_names()}, or register your own "
                         "(sglang.srt.mezo.training.objectives.register_objective, loaded with --extension) or "
                         "give it as 'module:Class'")
    return _TABLE[name]


def objectives_for_rows(kind: str) -> list[ObjectiveEntry]:
    """The objectives that train on rows of ``kind``, built-ins first, in table order."""
    return [e for e in _TABLE.values() if kind in e.rows]


def task_rows(default_objective: str) -> str:
    """The row kind of a task whose default objective is ``default_objective`` (``TaskPreset.objective``)."""
    return objective_entry(default_objective).rows[0]


def add_objective(entry: ObjectiveEntry) -> None:
    """Add a user's objective to the table; a name already taken is a ValueError (the same entry
    again is a no-op, so a module imported twice registers once)."""
    if not isinstance(entry, ObjectiveEntry):
        raise TypeError(f"add_objective takes an ObjectiveEntry, got {type(entry).__name__}")
    taken = _TABLE.get(entry.name)
    if taken is not None and taken != entry:
        owner = "a built-in objective" if taken.builtin else "already registered"
        raise ValueError(f"objective name {entry.name!r} is taken ({owner}); register yours under another name")
    _TABLE[entry.name] = entry
