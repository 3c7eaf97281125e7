"""The reward objective (graded generated answers) on SGLang's generation, checked against HF
transformers + PEFT's greedy ``generate`` at theta +/- eps z, and reward runs end to end on a tiny
chat model: file rows checked against the grader before a model loads, the same sampling seed on
both sides of a step, replay from the trajectory, and a sampled run stopped and resumed exactly."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import runner_for, trainer_for
from safetensors.torch import load_file
from test_dpo_objective import set_adapter
from test_generate import hf_greedy
from test_run import stop_after
from test_trainer import load_into_peft, peft_model, small_config
from transformers import AutoTokenizer

from sglang.srt.mezo.cli.train import main as cli_main
from sglang.srt.mezo.data.graders import Sample, parse_grader
from sglang.srt.mezo.engine.generate import GreedyGenerator
from sglang.srt.mezo.engine.runner import RunnerSpec, release_model_runner
from sglang.srt.mezo.errors import DataFormatError, GraderError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.finetune import mezo_mlm_finetune
from sglang.srt.mezo.training.objectives.reward import GradedAnswersObjective, PromptItem
from sglang.srt.mezo.training.plan import prepare, start_run
from sglang.srt.mezo.training.replay_weights import replay
from sglang.srt.mezo.training.trainer import MeZOTrainer
from sglang.srt.mezo.zo.update import z_scored

PROMPTS = [[0, 5, 7, 9, 11, 3, 40], [0, 8, 200, 4], [0, 300, 301, 302, 303, 304, 305, 306, 307], [0, 17]]
MAX_NEW = 6
# A grade that moves with every character of the answer, so that +eps and -eps answers that differ
# at all get different rewards.
FUZZY = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
         "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}


def test_a_step_climbs_the_reward_of_what_peft_generates_at_theta_plus_and_minus_eps(tmp_path, tiny_llama,
                                                                                     llama_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    grader = parse_grader(FUZZY)
    objective = GradedAnswersObjective(tok, grader, MAX_NEW)
    items = [PromptItem(tuple(p), {"answer": tok.decode(p[1:4])}) for p in PROMPTS]
    cfg = small_config(tmp_path, epsilon=0.3, learning_rate=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg, objective=objective) as tr:
        assert tr.trainable.paired  # both sides generate in one batch, on two LoRA slots
        theta = set_adapter(tr, 2, scale=0.3)
        peft = peft_model(tiny_llama, tr.save(str(tmp_path / "theta")))
        peft.generation_config.eos_token_id = None
        stops = sorted(objective.stop_token_ids)

        def hf_rewards(tensors) -> list[float]:
            load_into_peft(peft, tensors)
            answers = [objective.answer_text(ids) for ids in hf_greedy(peft, PROMPTS, MAX_NEW, stop=stops or None)]
            return [grader.score(e.item, Sample(a)) for a, e in zip(answers, items)]

        # Graded against the answers at theta itself: an answer the perturbation changes scores below 1.
        load_into_peft(peft, theta)
        items = [PromptItem(tuple(p), {"answer": objective.answer_text(ids)})
                 for p, ids in zip(PROMPTS, hf_greedy(peft, PROMPTS, MAX_NEW, stop=stops or None))]
        seed = 11
        g, lp, lm = tr.projected_gradient(items, seed)
        rewards = {sign: hf_rewards({n: theta[n] + sign * cfg.epsilon * tr.tensors.z(seed, i, theta[n])
                                     for i, n in enumerate(tr.trainable.names)}) for sign in (1, -1)}
        assert rewards[1] != rewards[-1]  # the perturbation changed some answer: g measures something
        assert lp == pytest.approx(-sum(rewards[1]) / 4, abs=1e-12)
        assert lm == pytest.approx(-sum(rewards[-1]) / 4, abs=1e-12)
        # g of the loss (minus the reward): the update theta -= lr g z climbs the reward.
        assert g == pytest.approx(-(sum(rewards[1]) - sum(rewards[-1])) / 4 / (2 * cfg.epsilon), abs=1e-12)
        assert all(torch.equal(t, theta[n]) for n, t in zip(tr.trainable.names, tr.trainable.tensors))

        # An evaluation answers greedily at the trained weights and reports the mean grade.
        at_theta = hf_rewards(theta)
        metrics = tr.evaluate(items)
        assert metrics["eval_reward"] == pytest.approx(sum(at_theta) / 4, abs=1e-12)
        assert metrics["eval_loss"] == pytest.approx(-metrics["eval_reward"], abs=1e-12)

        step = tr.step(items)
        assert step.metrics["train_reward_mean"] == pytest.approx(-step.loss, abs=1e-12)


def test_sampled_answers_draw_alike_on_both_sides_and_differ_by_seed(tiny_llama):
    with runner_for(RunnerSpec(tiny_llama, max_total_tokens=1024)) as runner:
        generate = GreedyGenerator(runner)
        seeds = [1, 2, 3, 4]
        first = generate(PROMPTS, max_new_tokens=8, temperature=1.0, sample_seeds=seeds)
        # A prompt's draw depends on its seed alone, not on the batch it is in.
        assert generate(PROMPTS * 2, max_new_tokens=8, temperature=1.0, sample_seeds=seeds * 2) == first * 2
        other = generate(PROMPTS, max_new_tokens=8, temperature=1.0, sample_seeds=[5, 6, 7, 8])
        assert other != first
        assert first != generate(PROMPTS, max_new_tokens=8)  # sampling is not greedy decoding
        with pytest.raises(ValueError, match="one sample seed per prompt"):
            generate(PROMPTS, max_new_tokens=8, temperature=1.0)


def test_with_sampling_a_vanishing_perturbation_gives_no_gradient(tmp_path, tiny_llama, llama_tokenizer_dir):
    """Both sides of a step draw with the same seeds: with eps tiny the answers coincide and g is 0,
    although each step's answers are random (sampling noise does not enter the difference)."""
    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    objective = GradedAnswersObjective(tok, parse_grader(FUZZY), MAX_NEW)
    items = [PromptItem(tuple(p), {"answer": tok.decode(p[1:4])}) for p in PROMPTS]
    cfg = small_config(tmp_path, epsilon=1e-7, temperature=1.5)
    with trainer_for(MeZOTrainer, tiny_llama, cfg, objective=objective) as tr:
        set_adapter(tr, 3, scale=0.3)
        steps = [tr.step(items) for _ in range(3)]
        assert [s.projected_grads[0] for s in steps] == [0.0] * 3
        assert len({s.loss for s in steps}) > 1  # the answers themselves were sampled anew each step


def test_an_es_population_step_z_scores_what_each_direction_earns_on_the_whole_batch(tmp_path, tiny_llama,
                                                                                     llama_tokenizer_dir):
    """reward_shaping='z-score': the n directions answer every prompt in one generation; each
    direction's (L+, L-) is what it earns alone, the 2n values are z-scored together, g_k is
    (Z+_k - Z-_k) / 2, and theta moves by -lr / n * sum g_k z_k."""
    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    objective = GradedAnswersObjective(tok, parse_grader(FUZZY), MAX_NEW)
    cfg = small_config(tmp_path, epsilon=0.3, learning_rate=1e-2, objective="reward", task="reinforcement",
                       grader=FUZZY, n_spsa=3, reward_shaping="z-score")
    with trainer_for(MeZOTrainer, tiny_llama, cfg, objective=objective) as tr:
        assert len(tr.trainable.probe_slots) == 3  # a pair of slots per member: one generation for all
        theta = set_adapter(tr, 2, scale=0.3)
        answers = tr.generate(objective.generation_inputs([PromptItem(tuple(p), {}) for p in PROMPTS]))
        items = [PromptItem(tuple(p), {"answer": objective.answer_text(a)}) for p, a in zip(PROMPTS, answers)]
        seeds = tr.seeds.peek()
        alone = [tr.perturbed_losses(items, s) for s in seeds]  # one generation per direction
        assert len({v for pair in alone for v in pair}) > 2  # the members earn different rewards
        step = tr.step(items)
        assert step.seeds == seeds
        assert step.projected_grads == pytest.approx([(zp - zm) / 2 for zp, zm in z_scored(alone)], abs=1e-9)
        assert step.loss == pytest.approx(sum(a + b for a, b in alone) / 6, abs=1e-12)  # the raw rewards
        for i, (n, t) in enumerate(zip(tr.trainable.names, tr.trainable.tensors)):
            update = sum(g * tr.tensors.z(s, i, theta[n]) for s, g in zip(seeds, step.projected_grads))
            torch.testing.assert_close(t, theta[n] - cfg.learning_rate / 3 * update, rtol=0, atol=1e-6)


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


ROWS = [{"messages": [{"role": "user", "content": f"Say {w}."}], "answer": w} for w in ("yes", "no", "red", "blue")]


def _small(**kw):
    return dict(num_steps=4, eval_steps=2, batch_size=2, lora_rank=2, learning_rate=1e-2, epsilon=1e-1,
                dtype="float32", progress_bar=False, max_new_tokens=4, **kw)


def test_a_reinforcement_file_trains_through_mezo_mlm_finetune_and_replays(tmp_path, tiny_chat_llama):
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    out = tmp_path / "run"
    grader = {"type": "multi", "name": "both", "calculate_output": "0.5 * close + 0.5 * has",
              "graders": {"close": FUZZY, "has": {"type": "string_check", "name": "has", "operation": "ilike",
                                                  "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}}}
    result = mezo_mlm_finetune(tiny_chat_llama, task_name="reinforcement", train_dataset=train, eval_dataset=train,
                               grader=grader, output_dir=str(out), **_small())
    assert result["objective"] == "reward" and result["primary_metric"] == "eval_reward"
    assert result["steps"] == 4 and all(0.0 <= r["eval_reward"] <= 1.0 for r in result["eval_history"])
    steps = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [e for e in steps if e.get("event") == "step"]
    assert len(steps) == 4 and all(0.0 <= e["train_reward_mean"] <= 1.0 for e in steps)
    # Replay needs no generation: the trajectory holds each step's projected gradient.
    rebuilt = load_file(os.path.join(replay(str(out), str(tmp_path / "replayed")), "adapter_model.safetensors"))
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[n], rebuilt[n]) for n in saved)


def test_a_sampled_reward_run_stopped_and_resumed_ends_as_if_it_had_never_stopped(tmp_path, tiny_chat_llama):
    # A step's sampling seeds come from the run's seed and the step's number, not from state a
    # restart loses, so the resumed steps draw (and grade, and update) exactly as the straight run.
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    grader = {**FUZZY, "name": "close"}

    def spec(out, **kw):
        return MeZOConfig(model_path=tiny_chat_llama, objective="reward", task="reinforcement", train_file=train,
                          eval_file=train, grader=grader, temperature=1.0, output_dir=str(out), **_small(**kw))

    straight = mezo_mlm_finetune(tiny_chat_llama, task_name="reinforcement", train_dataset=train, eval_dataset=train,
                                 grader=grader, temperature=1.0, output_dir=str(tmp_path / "a"), **_small())
    assert len(set(straight["train_loss"])) > 1
    stop_after(spec(tmp_path / "b"), 2)
    resumed = start_run(prepare(spec(tmp_path / "b", resume=True)))
    try:
        assert resumed.step_count == 2
        out = resumed.run_to_end()
    finally:
        release_model_runner(resumed.trainer.runner)
    assert out["train_loss"] == straight["train_loss"]
    a, b = (load_file(str(tmp_path / d / "adapter" / "adapter_model.safetensors")) for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def test_an_es_population_run_trains_and_replays_from_its_trajectory(tmp_path, tiny_chat_llama):
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    out = tmp_path / "run"
    result = mezo_mlm_finetune(tiny_chat_llama, task_name="reinforcement", train_dataset=train, grader=FUZZY,
                               reward_shaping="z-score", n_spsa=3, output_dir=str(out), **_small())
    assert result["steps"] == 4 and result["config"]["reward_shaping"] == "z-score"
    rebuilt = load_file(os.path.join(replay(str(out), str(tmp_path / "replayed")), "adapter_model.safetensors"))
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[n], rebuilt[n]) for n in saved)


def test_bad_rows_and_bad_graders_fail_before_a_model_loads(tmp_path, tiny_chat_llama):
    train = _jsonl(tmp_path / "train.jsonl", ROWS[:2] + [{"messages": ROWS[2]["messages"], "solution": "red"}])
    with pytest.raises(GraderError, match=r"item\.answer.*train\.jsonl, line 3|train\.jsonl, line 3.*item\.answer"):
        prepare(MeZOConfig(model_path=tiny_chat_llama, task="reinforcement", train_file=train, grader=FUZZY))
    answered = _jsonl(tmp_path / "answered.jsonl", [{"messages": ROWS[0]["messages"] +
                                                     [{"role": "assistant", "content": "yes"}], "answer": "yes"}])
    with pytest.raises(DataFormatError, match=r"answered\.jsonl, line 1.*last message must be the user's"):
        prepare(MeZOConfig(model_path=tiny_chat_llama, task="reinforcement", train_file=answered, grader=FUZZY))
    with pytest.raises(ValueError, match="needs a grader"):
        MeZOConfig(model_path=tiny_chat_llama, task="reinforcement", train_file=train)
    with pytest.raises(GraderError, match="python"):
        MeZOConfig(task="reinforcement", grader={"type": "python", "name": "p", "source": "def grade(s, i): return 1"})
    with pytest.raises(ValueError, match="objective 'reward'"):
        MeZOConfig(task="sst-2", grader=FUZZY)


def test_the_cli_reads_a_grader_file_and_squad_defaults_to_its_f1(tmp_path, tiny_chat_llama, capsys):
    squad = _jsonl(tmp_path / "squad.jsonl", [
        {"id": str(i), "title": "T", "context": f"The word is {w}.", "question": "What is the word?", "answers": [w]}
        for i, w in enumerate(("red", "blue", "green", "gold"))])
    config = MeZOConfig(task="squad", objective="reward")
    assert config.grader is None  # the objective's default: SQuAD F1 against every accepted answer
    result = mezo_mlm_finetune(tiny_chat_llama, task_name="squad", objective="reward", train_dataset=squad,
                               eval_dataset=squad, **_small())
    assert {"eval_reward", "eval_f1", "eval_exact_match"} <= set(result["eval_history"][-1])
    # The reward is SQuAD's F1 in [0, 1]; eval_f1 is the same answers' F1 in percent.
    last = result["eval_history"][-1]
    assert last["eval_reward"] * 100 == pytest.approx(last["eval_f1"], abs=1e-9)

    grader_file = tmp_path / "grader.json"
    grader_file.write_text(json.dumps(FUZZY | {"reference": "{{item.answer}}"}))
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    cli_main(["--model-path", tiny_chat_llama, "--task", "reinforcement", "--train-file", train, "--eval-file", train,
          "--grader", str(grader_file), "--num-steps", "2", "--batch-size", "2", "--max-new-tokens", "3",
          "--dtype", "float32", "--output-dir", str(tmp_path / "cli")])
    summary = json.load(open(tmp_path / "cli" / "summary.json"))
    assert summary["config"]["grader"]["evaluation_metric"] == "fuzzy_match"
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "string_check", "name": "x"')
    capsys.readouterr()
    assert cli_main(["--model-path", tiny_chat_llama, "--task", "reinforcement", "--train-file", train,
                 "--grader", str(bad)]) == 2
    assert "bad.json: not JSON" in capsys.readouterr().err
