"""Registering an objective of one's own (register_objective) and the table the layers above training
read: what a registration takes from the class it subclasses, and the error of each bad one."""

from __future__ import annotations

import pytest

from sglang.srt.mezo.data.objective_table import ObjectiveEntry, objective_entry, objective_names, task_rows
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.server.openai_objects import openai_method
from sglang.srt.mezo.training.objectives import register_objective, registered
from sglang.srt.mezo.training.objectives.base import LogitsObjective
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.objectives.dpo import DPOObjective
from sglang.srt.mezo.training.objectives.reward import ScoredAnswersObjective


class Doubled(CompletionObjective):
    def loss(self, logits, batch):
        return 2 * super().loss(logits, batch)


class Pairs(DPOObjective):
    pass


class Lengths(ScoredAnswersObjective):
    def score(self, answer, item):
        return float(len(answer))


class NoPlan(LogitsObjective):
    def forward_inputs(self, batch):
        raise NotImplementedError

    def loss(self, logits, batch):
        return 0.0

    def predict(self, logits, batch):
        return [], []


class HalfWritten(LogitsObjective):
    def forward_inputs(self, batch):
        raise NotImplementedError

    @classmethod
    def from_plan(cls, plan, name):
        return cls()


def test_a_subclass_takes_what_its_registered_parent_trains_on_and_the_layers_above_read_it():
    assert register_objective(Doubled, "doubled_completion") == "doubled_completion"
    entry = objective_entry("doubled_completion")
    assert (entry.rows, entry.default_task, entry.model_kinds, entry.openai_method, entry.k_shot) == \
        (("completions",), "chat", ("causal",), "supervised", "rows")
    assert entry.metrics == ("eval_f1",) and not entry.builtin and "doubled_completion" in objective_names()
    assert registered()["doubled_completion"] is Doubled
    assert register_objective(Doubled, "doubled_completion") == "doubled_completion"  # again: a no-op
    # The run spec fills the task in and checks the fit from the entry, as for a built-in one.
    assert MeZOConfig(objective="doubled_completion").task == "chat"
    with pytest.raises(ValueError, match="task 'sst-2' trains with objective 'ce' or 'accuracy' or 'options', not "
                                         "'doubled_completion': its classes are label words"):
        MeZOConfig(task="sst-2", objective="doubled_completion")
    # A server job's method is the entry's.
    register_objective(Pairs, "my_pairs")
    assert openai_method("my_pairs") == "dpo" and objective_entry("my_pairs").default_task == "preference"


def test_a_score_of_generated_text_says_its_rows_and_is_a_reinforcement_objective():
    with pytest.raises(ValueError, match=r"subclasses no registered objective, so say which rows it trains on"):
        register_objective(Lengths, "lengths")
    register_objective(Lengths, "lengths", rows=("prompts", "completions"))
    entry = objective_entry("lengths")
    assert entry.openai_method == "reinforcement" and entry.metrics == ("eval_reward",)
    assert MeZOConfig(objective="lengths").task == "reinforcement"
    assert MeZOConfig(task="squad", objective="lengths").task == "squad"  # squad's rows are completions


def test_the_default_name_is_module_colon_class():
    assert register_objective(Lengths, rows=("prompts",)) == f"{__name__}:Lengths"


@pytest.mark.parametrize("cls, error, words", [
    (object, TypeError, "register_objective takes an Objective class"),
    (len, TypeError, "register_objective takes an Objective class"),
    (HalfWritten, TypeError, "HalfWritten does not define loss, predict: a LogitsObjective writes"),
    (NoPlan, TypeError, "NoPlan has no classmethod from_plan(plan, name)"),
])
def test_a_class_that_cannot_be_an_objective_is_refused_saying_what_it_lacks(cls, error, words):
    with pytest.raises(error) as refused:
        register_objective(cls, "refused_one")
    assert words in str(refused.value)
    assert "refused_one" not in objective_names()


def test_a_name_that_is_taken_is_refused():
    with pytest.raises(ValueError, match="objective name 'completion' is taken \\(a built-in objective\\)"):
        register_objective(Doubled, "completion")
    register_objective(Doubled, "taken_by_doubled")
    with pytest.raises(ValueError, match="objective name 'taken_by_doubled' is taken \\(by .*Doubled\\)"):
        register_objective(Pairs, "taken_by_doubled")
    assert registered()["taken_by_doubled"] is Doubled


@pytest.mark.parametrize("fields, words", [
    (dict(rows=("sentences",)), "rows ['sentences'] must name one or more of"),
    (dict(rows=()), "rows [] must name one or more of"),
    (dict(rows=("completions",), model_kinds=("seq2seq",)), "model_kinds ['seq2seq'] must name"),
    (dict(rows=("completions",), metrics=("f1",)), "must be evaluation metric names starting with 'eval_'"),
])
def test_an_entry_that_cannot_be_read_is_refused(fields, words):
    with pytest.raises(ValueError) as refused:
        ObjectiveEntry("bad_entry", **fields)
    assert words in str(refused.value)


def test_an_unknown_name_lists_the_known_ones_and_how_to_add_one():
    with pytest.raises(ValueError) as refused:
        MeZOConfig(objective="f1")
    message = str(refused.value)
    assert "unknown objective 'f1': choose one of [" in message and "'completion'" in message
    assert "register_objective" in message and "'module:Class'" in message


def test_every_task_has_one_row_kind():
    assert [task_rows(o) for o in ("ce", "options", "completion", "dpo", "reward")] == \
        ["labels", "options", "completions", "preferences", "prompts"]
