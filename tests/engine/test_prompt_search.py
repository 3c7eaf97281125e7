"""Prompt selection with forward passes only (label_words="auto", template="auto", calibrate=True):
the search on a real SGLang runner checked against HF transformers, the assignment search against
brute force, what a run records, and that resume reuses the recorded choice."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch
from sglang.srt import mezo_mlm_trainer as mm
from transformers import AutoModelForCausalLM

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.presets import get_task, template_candidates
from sglang.srt.mezo.data.sampling import prepare_splits
from sglang.srt.mezo.engine.runner import release_model_runner
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.run_spec.config_arguments import add_config_arguments, config_from_arguments
from sglang.srt.mezo.training import plan as plan_module
from sglang.srt.mezo.training.plan import PROMPT_FILE, prepare, start_run
from sglang.srt.mezo.training.prompt_search import PromptChoice, _Rows, calibration_bias, rank_assignments

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def spec(model, toy_file, **kw) -> MeZOConfig:
    base = dict(model_path=model, task="sst-2", train_file=toy_file, eval_file=toy_file, k_shot=4, device="cpu",
                progress_bar=False, learning_rate=5e-2, epsilon=1e-2, batch_size=8, lora_rank=4, num_steps=2,
                eval_steps=2, template="auto", label_words="auto", calibrate=True, dtype="float32")  # HF cross-checks
    base.update(kw)
    return MeZOConfig(**base)


def hf_rows(model_dir, encoder, examples) -> torch.Tensor:
    """Whole-vocabulary logits at the read position, from HF transformers."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.stack([model(torch.tensor([e.input_ids])).logits[0, e.position]
                            for e in encoder.encode_all(examples)])


def test_spec_takes_auto_and_the_cli_too():
    assert MeZOConfig(label_words="AUTO", template="auto").label_words == "auto"
    assert MeZOConfig(label_words="0:bad,1:good").label_words == {"0": "bad", "1": "good"}
    with pytest.raises(ValueError, match="has no \\[MASK\\] slot"):
        MeZOConfig(template="autumn")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--label-words", "auto", "--template", "auto", "--calibrate"])
    config = config_from_arguments(args)
    assert (config.label_words, config.template, config.calibrate) == ("auto", "auto", True)


def test_assignment_search_is_the_brute_force_best():
    gen = torch.Generator().manual_seed(0)
    rows = _Rows(torch.log_softmax(torch.randn(12, 30, generator=gen), -1), torch.tensor([0, 1, 2] * 4))
    content_free = torch.log_softmax(torch.randn(2, 30, generator=gen), -1)
    candidates = [torch.tensor([1, 2, 3, 4]), torch.tensor([2, 5, 6]), torch.tensor([7, 8, 1])]
    for cf in (None, content_free):
        best = rank_assignments(rows, candidates, cf, keep=3)
        brute = []
        for words in itertools.product(*[c.tolist() for c in candidates]):
            if len(set(words)) < 3:
                continue
            logits = rows.log_probs[:, list(words)].double()
            if cf is not None:  # Zhao et al.: p / p_cf, p_cf the mean over content-free inputs
                p_cf = torch.softmax(cf[:, list(words)].double(), -1).mean(0)
                logits = logits - p_cf.log()
            log_p = torch.log_softmax(logits, -1)
            acc = (log_p.argmax(-1) == rows.labels).double().mean().item()
            ce = -log_p[torch.arange(12), rows.labels].mean().item()
            brute.append((words, acc, ce))
        brute.sort(key=lambda r: (-r[1], r[2]))
        assert [b[0] for b in best] == [b[0] for b in brute[:3]]
        assert [b[1] for b in best] == pytest.approx([b[1] for b in brute[:3]])


def test_search_scores_match_transformers_and_the_run_records_and_uses_the_choice(tiny_llama, toy_file, tmp_path):
    plan = prepare(spec(tiny_llama, toy_file, output_dir=str(tmp_path / "run")))
    dev = plan.examples.dev
    assert len(plan.examples.train) == 8 and len(dev) == 8 and not set(dev) & set(plan.examples.train)
    mezo_run = start_run(plan)
    try:
        choice = plan.prompt_choice
        trainer = mezo_run.trainer
        # Every candidate template of the task was tried, and the best on dev was taken.
        assert {c["template"] for c in choice.candidates} == set(template_candidates(get_task("sst-2"), "causal"))
        assert choice.candidates[0]["template"] == choice.template
        assert choice.selected_on.startswith("the k-shot dev split (8")
        # Each candidate's dev score, recomputed from HF transformers' logits.
        for cand in choice.candidates[:4]:
            words = cand["label_words"]
            encoder = plan.prompt.with_prompt(cand["template"], words, False)
            ids = torch.tensor(encoder.label_token_ids)
            logits = hf_rows(tiny_llama, encoder, dev)[:, ids].double()
            cf = hf_rows(tiny_llama, encoder, [Example(t, None, 0) for t in ("N/A", "")])
            bias = torch.log_softmax(cf, -1).double()
            logits = logits - calibration_bias(bias, ids)
            assert cand["calibration"] == pytest.approx(calibration_bias(bias, ids).tolist(), abs=1e-5)
            labels = torch.tensor([e.label_index for e in encoder.encode_all(dev)])
            assert cand["dev_accuracy"] == pytest.approx((logits.argmax(-1) == labels).double().mean().item())
            assert cand["dev_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), abs=1e-4)
        # The run trains and evaluates with the chosen prompt, calibrated.
        assert trainer.objective.prompt.template == choice.template and trainer.objective.prompt is plan.prompt
        assert trainer.objective.label_bias.tolist() == pytest.approx(choice.calibration)
        assert plan.train[0] == plan.prompt.encode(plan.examples.train[0])
        result = mm.complete(plan, mezo_run, owns_runner=True)
    except BaseException:
        release_model_runner(mezo_run.trainer.runner)
        raise
    recorded = json.loads((tmp_path / "run" / PROMPT_FILE).read_text())
    assert PromptChoice.from_dict(recorded) == choice
    assert result["prompt_search"]["template"] == choice.template
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["prompt"]["template"] == choice.template


def test_a_resumed_run_reuses_the_recorded_prompt(tiny_llama, toy_file, tmp_path, monkeypatch):
    config = spec(tiny_llama, toy_file, output_dir=str(tmp_path / "run"), num_steps=4)
    mezo_run = start_run(prepare(config))
    try:
        mezo_run.advance()
        mezo_run.advance()
        mezo_run.save()
    finally:
        release_model_runner(mezo_run.trainer.runner)
    recorded = json.loads((tmp_path / "run" / PROMPT_FILE).read_text())
    # Change the record: a resumed run must take it as it is, without searching again.
    recorded["label_words"] = {"0": "bad", "1": "good"}
    recorded["calibration"] = [0.25, -0.25]
    (tmp_path / "run" / PROMPT_FILE).write_text(json.dumps(recorded))

    def no_search(*args, **kwargs):
        raise AssertionError("a resumed run searched for its prompt again")

    monkeypatch.setattr(plan_module, "search_prompt", no_search)
    plan = prepare(dataclasses.replace(config, resume=True))
    resumed = start_run(plan)
    try:
        assert resumed.trainer.objective.prompt.label_words == ["bad", "good"]
        assert resumed.trainer.objective.label_bias.tolist() == [0.25, -0.25]
    finally:
        release_model_runner(resumed.trainer.runner)


def test_given_words_with_calibration_only(tiny_llama, toy_file):
    """calibrate=True alone keeps the prompt and corrects its lean; the preset's words score too."""
    plan = prepare(spec(tiny_llama, toy_file, template=None, label_words={"0": "bad", "1": "good"}, num_steps=0,
                        output_dir=None))
    mezo_run = start_run(plan)
    try:
        choice = plan.prompt_choice
        assert [c["label_words"] for c in choice.candidates] == [["bad", "good"]]
        assert choice.template == get_task("sst-2").causal_template
        examples = plan.examples.eval
        logits = hf_rows(tiny_llama, plan.prompt, examples)[:, plan.prompt.label_token_ids].double()
        calibrated = logits - torch.tensor(choice.calibration, dtype=torch.float64)
        labels = torch.tensor([e.label_index for e in plan.eval])
        metrics = mezo_run.trainer.evaluate(plan.eval)
        assert metrics["eval_accuracy"] == pytest.approx((calibrated.argmax(-1) == labels).double().mean().item())
        assert metrics["eval_loss"] == pytest.approx(torch.nn.functional.cross_entropy(calibrated, labels).item(), abs=1e-4)
    finally:
        release_model_runner(mezo_run.trainer.runner)


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder absent")
@pytest.mark.parametrize("task", ["sst-2", "trec"])
def test_the_selection_split_never_overlaps_train_or_eval(task):
    splits = prepare_splits(get_task(task), seed=13)
    assert splits.dev and not set(splits.dev) & (set(splits.train) | set(splits.eval))
    assert len(splits.dev) == len(splits.train)  # k a class, like the training set
