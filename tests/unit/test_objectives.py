"""The objective interface and its registry (no model: objectives are functions of logits)."""

from __future__ import annotations

import typing
from types import SimpleNamespace

import pytest
import torch

from sglang.srt.mezo.data.chat import TokenizedCompletion
from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.objective_table import objective_entry, objective_names
from sglang.srt.mezo.data.presets import get_task
from sglang.srt.mezo.data.prompt import EncodedExample
from sglang.srt.mezo.run_spec.config import ObjectiveName
from sglang.srt.mezo.training.objectives import objective_for, register, registered
from sglang.srt.mezo.training.objectives.base import Objective
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.objectives.label_words import LabelWordObjective
from sglang.srt.mezo.training.objectives.next_token import NextTokenObjective
from sglang.srt.mezo.training.objectives.options import OptionsItem, OptionsObjective


def test_the_spec_names_exactly_the_registered_objectives():
    builtins = {name for name in registered() if objective_entry(name).builtin}
    assert set(typing.get_args(ObjectiveName)) == builtins
    assert {n for n in objective_names() if objective_entry(n).builtin} == builtins


def test_each_builtin_entry_names_its_class_headline_metric():
    for name, cls in registered().items():
        assert objective_entry(name).metrics[0] == cls.primary_metric, name


def test_every_registered_objective_implements_the_interface():
    for name, cls in registered().items():
        assert issubclass(cls, Objective), name
        assert callable(getattr(cls, "from_plan", None)), f"{name}: from_plan(plan, name) builds it from a run's plan"


def test_an_objective_must_define_its_forward_and_loss():
    class Half(Objective):
        def forward_inputs(self, batch):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register("ce")(type("Other", (), {}))


def test_an_unknown_objective_is_named():
    plan = SimpleNamespace(config=SimpleNamespace(objective="telepathy"))
    with pytest.raises(ValueError, match="unknown objective 'telepathy'"):
        objective_for(plan)


def test_next_token_cross_entropy_against_torch():
    objective = NextTokenObjective()
    batch = [([1, 2, 3], 4), ([5, 6], 0)]
    inputs = objective.forward_inputs(batch)
    assert inputs.sequences == [[1, 2, 3], [5, 6]] and inputs.positions == [2, 1] and inputs.vocab_ids is None
    logits = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.cross_entropy(logits.double(), torch.tensor([4, 0])).item()
    assert objective.loss(logits, batch) == want
    assert objective.predict(logits, batch) == (logits.argmax(-1).tolist(), [4, 0])


class _Prompt:
    """What the label-word objective reads of a PromptEncoder: its labels and label words' ids."""

    labels = [0, 1]
    label_token_ids = [11, 12]

    def encode(self, example: Example) -> EncodedExample:
        return EncodedExample((1, 2, len(example.text_a)), 2, self.labels.index(example.label))


def test_label_words_ce_accuracy_and_calibration():
    prompt = _Prompt()
    batch = [EncodedExample((1, 2), 1, 0), EncodedExample((3, 4, 5), 2, 1)]
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.5]])
    ce = LabelWordObjective(prompt, get_task("sst-2"), "ce")
    assert ce.forward_inputs(batch).vocab_ids.tolist() == [11, 12]
    assert ce.loss(logits, batch) == torch.nn.functional.cross_entropy(logits.double(), torch.tensor([0, 1])).item()
    assert LabelWordObjective(prompt, get_task("sst-2"), "accuracy").loss(logits, batch) == -0.5
    calibrated = LabelWordObjective(prompt, get_task("sst-2"), "ce", calibration=[1.0, -1.0])
    assert calibrated.predict(logits, batch) == ([0, 1], [0, 1])  # 1.0 - 1 < 0.5 + 1: the calibration decides
    assert ce.encode([Example("abcd", None, 1)]) == [EncodedExample((1, 2, 4), 2, 1)]
    assert ce.metrics([0, 1], [0, 0]) == {"eval_accuracy": 0.5}
    assert set(LabelWordObjective(prompt, get_task("cb"), "ce").metrics([0], [0])) == {"eval_accuracy", "eval_macro_f1"}
    with pytest.raises(ValueError, match="'ce' or 'accuracy'"):
        LabelWordObjective(prompt, get_task("sst-2"), "mse")


def test_completion_loss_is_the_token_mean_over_the_batch():
    objective = CompletionObjective(tokenizer=None)
    batch = [TokenizedCompletion((1, 5, 6, 7), (False, False, True, True), 2),
             TokenizedCompletion((1, 8, 9), (False, False, True), 2)]
    inputs = objective.forward_inputs(batch)
    assert inputs.positions == [[1, 2], [1]] and inputs.row_counts() == [2, 1] and inputs.vocab_ids is None
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.cross_entropy(logits.double(), torch.tensor([6, 7, 9])).item()
    assert objective.loss(logits, batch) == pytest.approx(want, abs=1e-12)
    predictions, references = objective.predict(logits, batch)
    metrics = objective.metrics(predictions, references)
    assert metrics["eval_loss"] == pytest.approx(want, abs=1e-12) and references == [2, 1]
    hits = (logits.argmax(-1) == torch.tensor([6, 7, 9])).double().mean().item()
    assert metrics["eval_mean_token_accuracy"] == pytest.approx(hits)
    assert objective.train_metrics(logits, batch)["train_mean_token_accuracy"] == pytest.approx(hits)


def test_options_are_one_sequence_each_and_owned_by_their_item():
    class _Tok:
        def encode(self, text, add_special_tokens=True):
            return [1] + [len(w) for w in text.split()]

    objective = OptionsObjective(_Tok(), get_task("arc-easy"))
    batch = [OptionsItem((1, 2, 3), ((4,), (5, 6)), 1), OptionsItem((1, 7), ((8, 9, 10),), 0)]
    inputs = objective.forward_inputs(batch)
    assert inputs.sequences == [[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 7, 8, 9, 10]]
    assert inputs.positions == [[2], [2, 3], [1, 2, 3]] and inputs.owners == [0, 0, 1]
    assert inputs.sequences_of([1]) == [2] and inputs.sequences_of([0]) == [0, 1]
