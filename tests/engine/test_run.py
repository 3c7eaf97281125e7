"""The run spec, plan-then-run, and the step-wise run object (state out and back in), on real
SGLang runners with a tiny random model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil

# Before any SGLang module: they read the engine choice (CPU or not) when imported.
import sglang.srt.mezo.engine.sglang_on_cpu  # noqa: F401

import pytest
import torch
from conftest import runner_for, trainer_for
from safetensors.torch import load_file
from sglang.srt.distributed import parallel_state

from sglang.srt.mezo.cli.train import build_parser
from sglang.srt.mezo.engine.forward import ExtendForward
from sglang.srt.mezo.engine.runner import RunnerSpec, release_model_runner
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.run_spec.config_arguments import add_config_arguments, config_from_arguments
from sglang.srt.mezo.training.checkpoints import RUN_STATE_FILE
from sglang.srt.mezo.training.plan import prepare, run, start_run
from sglang.srt.mezo.training.replay_weights import replay
from sglang.srt.mezo.training.run import BatchSampler
from sglang.srt.mezo.training.trainer import MeZOTrainer
from sglang.srt.mezo.zo.noise import draw_z
from sglang.srt.mezo.zo.trajectory import FILE as TRAJECTORY_FILE

TASK = [([0, 5, 7, 9, 11, 3, 40], 42), ([0, 8, 200, 4], 42), ([0, 300, 301, 302, 303, 304, 305, 306, 307], 42),
        ([0, 17, 18, 19], 42)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_spec(model, toy_file, **kw) -> MeZOConfig:
    base = dict(model_path=model, task="sst-2", train_file=toy_file, eval_file=toy_file, device="cpu",
                progress_bar=False, label_words={"0": "bad", "1": "good"}, learning_rate=5e-2, epsilon=1e-2,
                batch_size=8, lora_rank=4, dtype="float32")  # checked against fp32 references
    base.update(kw)
    return MeZOConfig(**base)


def stop_after(spec: MeZOConfig, steps: int) -> None:
    """Run ``spec`` for ``steps`` steps, save a checkpoint, and stop (trainer and runner thrown away)."""
    mezo_run = start_run(prepare(spec))
    try:
        while mezo_run.step_count < steps:
            mezo_run.advance()
        mezo_run.save()
    finally:
        release_model_runner(mezo_run.trainer.runner)


# ---------------------------------------------------------------- the spec


def test_spec_round_trips_through_a_dict_and_names_what_is_wrong():
    spec = MeZOConfig(task="SST2", label_words={0: "terrible", 1: "great"},
                      lora_target_modules=["q_proj", "v_proj", "o_proj"],
                      num_steps=10)
    assert spec.task == "sst-2" and spec.label_words == {"0": "terrible", "1": "great"}
    assert MeZOConfig.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    bad = [
        ({"learning_rat": 1e-3}, "unknown setting 'learning_rat' \\(did you mean 'learning_rate'\\?\\)"),
        ({"learning_rate": "fast"}, "learning_rate must be a finite number, got 'fast'"),
        ({"num_steps": 2.5}, "num_steps must be a whole number"),
        ({"num_steps": -1}, "num_steps must be >= 0"),
        ({"trainable": "prefix"}, "unknown trainable set 'prefix': choose one of \\['lora', 'full'\\]"),
        ({"lr_schedule": "cosine"}, "unknown lr_schedule 'cosine'"),
        ({"task": "cola"}, "unknown task 'cola'"),
        ({"template": "It was good."}, "has no \\[MASK\\] slot"),
        ({"label_words": {"0": ""}}, "label word for '0' must be a non-empty string"),
        ({"eval_at_start": "yes"}, "eval_at_start must be true or false"),
        ({"lora_target_modules": ["c_attn"]}, "LoRA target modules \\['c_attn'\\] are not supported"),
        ({"lora_target_modules": ["q_proj"]}, "needs q_proj and v_proj together"),
        ({"lora_target_modules": ["k_proj", "v_proj"]}, "needs q_proj and v_proj together"),
        ({"trainable": "full", "lora_layers": 4}, "need trainable='lora'"),
        ({"update_rule": "lion"}, "unknown update_rule 'lion'"),
        ({"update_rule": "adam", "trainable": "full"}, "update_rule='adam' keeps Adam's two moments"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            MeZOConfig.from_dict(values)


def test_resolve_fills_the_per_kind_defaults_once():
    causal = MeZOConfig(num_steps=400).resolve("causal")
    assert (causal.trainable, causal.learning_rate, causal.epsilon, causal.batch_size, causal.eval_steps) == \
        ("lora", 1e-3, 1e-2, 16, 100)
    assert causal.resolve("causal") == causal  # resolving twice changes nothing
    # Causal-LM LoRA: the lever grid's winners (benchmarks/results/accuracy.md); the rest as in the paper.
    assert (causal.lora_rank, causal.update_rule, causal.dtype) == (2, "normalized", "auto")
    full = MeZOConfig(trainable="full").resolve("causal")
    assert (full.lora_rank, full.update_rule, full.dtype) == (8, "sgd", "float32")
    masked = MeZOConfig().resolve("masked")
    assert (masked.trainable, masked.batch_size, masked.num_steps) == ("full", 64, 100000)
    assert (masked.update_rule, masked.dtype) == ("sgd", "float32")
    given = MeZOConfig(lora_rank=8, update_rule="sgd", dtype="float32").resolve("causal")
    assert (given.lora_rank, given.update_rule, given.dtype) == (8, "sgd", "float32")
    assert MeZOConfig(trainable="lora", learning_rate=0.5).resolve("masked").learning_rate == 0.5


def test_the_completion_objective_has_its_own_learning_rate_and_the_rest_keep_the_kinds():
    # Chosen on held-out SQuAD training rows (benchmarks/results/generative_defaults.md).
    # The completion objective's decays linearly to 0 at the last step (a 500-step run at a constant
    # 3e-3 climbs back above its starting loss).
    for task, objective, lr, schedule in (("squad", None, 3e-3, "linear"), ("chat", "completion", 3e-3, "linear"),
                                          ("sst-2", None, 1e-3, "constant"), ("arc-easy", None, 1e-3, "constant"),
                                          ("preference", "dpo", 1e-3, "constant")):
        config = MeZOConfig(task=task, objective=objective).resolve("causal")
        assert (config.learning_rate, config.lr_schedule) == (lr, schedule), (task, objective)
        assert (config.epsilon, config.lora_rank, config.update_rule) == (1e-2, 2, "normalized")
    assert MeZOConfig(task="squad", learning_rate=1e-4).resolve("causal").learning_rate == 1e-4
    assert MeZOConfig(task="squad", lr_schedule="constant").resolve("causal").lr_schedule == "constant"
    # Full weights have no completion default of their own.
    assert MeZOConfig(task="squad", trainable="full").resolve("causal").learning_rate == 1e-6


def test_cli_flags_are_made_from_the_spec():
    parser = build_parser()
    flags = {a.dest: a.option_strings for a in parser._actions}
    for f in dataclasses.fields(MeZOConfig):
        if f.metadata["cli"] is not False:
            assert f.name in flags, f"no flag for {f.name}"
    # No flags given: the spec's own defaults (bar the progress bar, which --quiet controls).
    assert config_from_arguments(parser.parse_args([]), progress_bar=True) == MeZOConfig()
    args = parser.parse_args(["--task", "rte", "--label-words", "entailment:yes,not_entailment:no",
                              "--no-space-prefix", "--lora-target-modules", "q_proj,k_proj,v_proj", "--no-eval-at-start",
                              "--paired-forward", "--learning-rate", "1e-4"])
    spec = config_from_arguments(args)
    assert spec.task == "rte" and spec.label_words == {"entailment": "yes", "not_entailment": "no"}
    assert spec.use_space_prefix is False and spec.lora_target_modules == ("q_proj", "k_proj", "v_proj")
    assert spec.eval_at_start is False and spec.paired_forward is True and spec.learning_rate == 1e-4
    bare = argparse.ArgumentParser()
    add_config_arguments(bare)
    help_text = bare.format_help()
    assert "--k-shot" in help_text and "examples per class" in help_text


def test_batch_sampler_state_continues_the_same_order():
    straight = BatchSampler(7, 3, seed=5)
    want = [next(straight) for _ in range(8)]
    first = BatchSampler(7, 3, seed=5)
    got = [next(first) for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))
    second = BatchSampler(7, 3, seed=999)
    second.load_state_dict(state)
    got += [next(second) for _ in range(5)]
    assert got == want


# ---------------------------------------------------------------- plan, then run


def test_prepare_resolves_everything_and_builds_no_model(tiny_llama, toy_file):
    plan = prepare(toy_spec(tiny_llama, toy_file, num_steps=6))
    assert not parallel_state.model_parallel_is_initialized()  # no runner was built
    assert plan.kind == "causal" and plan.config.trainable == "lora" and plan.config.eval_steps == 2
    assert len(plan.train) == len(plan.eval) == 16 and plan.prompt.label_words == ["bad", "good"]
    assert all(e.input_ids and e.position == len(e.input_ids) - 1 for e in plan.train)
    with pytest.raises(ValueError, match="tokens in this vocabulary"):
        prepare(toy_spec(tiny_llama, toy_file, label_words={"0": "badly", "1": "good"}))


def test_run_on_a_handed_runner_leaves_it_running(tiny_llama, toy_file, tmp_path):
    spec = toy_spec(tiny_llama, toy_file, num_steps=4, eval_steps=2, output_dir=str(tmp_path / "run"))
    plan = prepare(spec)
    runner_spec = RunnerSpec(tiny_llama, device="cpu", lora_rank=4, lora_target_modules=["q_proj", "v_proj"],
                             max_loras_per_batch=4)
    with runner_for(runner_spec) as runner:
        free_before = runner.token_to_kv_pool_allocator.available_size()
        events = []
        result = run(plan, runner=runner, callbacks=[events.append])
        # The runner still serves: its parallel state is up, its KV slots all returned, and the
        # run's own adapters are out of its LoRA pool.
        assert parallel_state.model_parallel_is_initialized()
        assert runner.token_to_kv_pool_allocator.available_size() == free_before
        assert not runner.lora_manager.loras
        assert ExtendForward(runner)([[0, 5, 7]], [2]).shape[0] == 1
    assert [e["event"] for e in events if e["event"] != "eval_progress"] == [
        "eval", "save", "step", "step", "eval", "save", "step", "step", "eval", "save", "returned", "end"]
    assert [e["step"] for e in result["eval_history"]] == [0, 2, 4]
    # The summary records the resolved spec, and the run can be made again from it.
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert MeZOConfig.load(str(tmp_path / "run")) == plan.config
    assert summary["config"]["learning_rate"] == 5e-2 and summary["config"]["trainable"] == "lora"


@pytest.mark.parametrize("trainable,dtype,extra", [("lora", "float32", {}), ("full", "float32", {}),
                                                  ("full", "float32", {"exact_restore": False}),
                                                  ("lora", "bfloat16", {}),
                                                  ("lora", "bfloat16", {"update_rule": "adam"}),
                                                  ("lora", "float32", {"n_spsa": 2, "split_batch": True}),
                                                  ("lora", "float32", {"n_spsa": 3, "estimator": "fzoo"}),
                                                  ("lora", "float32", {"estimator": "hizoo",
                                                                       "hessian_smoothing": 0.5})])
def test_stopping_between_steps_and_resuming_from_the_checkpoint_is_exact(tiny_llama, toy_file, tmp_path, trainable,
                                                                          dtype, extra):
    """Run A: 6 steps straight. Run B: 3 steps, a checkpoint, its trainer and runner thrown away;
    then resume=True goes on from the checkpoint (LoRA: the saved adapter; full weights: the base
    model and the trajectory replayed). Same steps, same losses, same weights. bf16 LoRA with the
    normalized rule is the causal-LM default; a split batch's steps are n-SPSA steps in the record, and
    so are FZOO's (its probes' seeds and (L_k - L_0) / sigma); ZO-Adam's moments and HiZOO's Hessian
    (under the normalized rule here; its curvature terms recorded too) are rebuilt from the record on resume.
    Full weights with the add/subtract restore: steps 1, 2, 4 and 5 also put on the next step's
    +eps z (two passes over the weights a step, counted), which the replay does not see."""
    # Run B is saved by hand at step 3 before that step's evaluation, so it has no evaluation there
    # to choose by: compare the last step's weights, not the handed-back ones.
    common = dict(num_steps=6, eval_steps=3, eval_at_start=False, trainable=trainable, dtype=dtype,
                  load_best_model_at_end=False, **extra)
    if trainable == "full":
        common.update(learning_rate=1e-3, epsilon=1e-3)
    plan_a = prepare(toy_spec(tiny_llama, toy_file, output_dir=str(tmp_path / "a"), **common))
    run_a = start_run(plan_a)
    passes = []
    real_move = run_a.trainer.tensors.move
    run_a.trainer.tensors.move = lambda ops: passes.append(len(ops)) or real_move(ops)
    try:
        result_a = run_a.run_to_end()
        if run_a.trainer.restore == "add-subtract":  # 3 passes a step, 2 when the next step follows
            assert len(passes) == 3 * 6 - 4 and run_a.trainer.trajectory.settled == []
        weights_a = [t.clone() for t in run_a.trainer.trainable.tensors]
        trajectory_a = list(run_a.trainer.trajectory.steps)
        curvatures_a = list(run_a.trainer.trajectory.curvatures)
    finally:
        release_model_runner(run_a.trainer.runner)

    spec_b = toy_spec(tiny_llama, toy_file, output_dir=str(tmp_path / "b"), **common)
    stop_after(spec_b, 3)
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-000003" / RUN_STATE_FILE).read_text())
    assert state["step"] == 3

    with pytest.raises(ValueError, match="already holds a run .* pass resume=True"):
        prepare(spec_b)
    n = spec_b.n_spsa
    with pytest.raises(ValueError, match=f"started with other settings \\(n_spsa: {n} -> {n + 1}\\)"):
        prepare(dataclasses.replace(spec_b, resume=True, n_spsa=n + 1))
    plan_c = prepare(dataclasses.replace(spec_b, resume=True))
    assert plan_c.resume_from.endswith("step-000003")
    run_c = start_run(plan_c)
    try:
        assert run_c.step_count == 3
        result_c = run_c.run_to_end()
        weights_c = [t.clone() for t in run_c.trainer.trainable.tensors]
        trajectory_c = list(run_c.trainer.trajectory.steps)
        curvatures_c = list(run_c.trainer.trajectory.curvatures)
    finally:
        release_model_runner(run_c.trainer.runner)
    assert trajectory_c == trajectory_a and all(len(seeds) == spec_b.n_spsa for seeds, _ in trajectory_a)
    assert curvatures_c == curvatures_a and len(curvatures_a) == (6 if spec_b.estimator == "hizoo" else 0)
    assert result_c["train_loss"] == result_a["train_loss"]
    assert all(torch.equal(a, c) for a, c in zip(weights_a, weights_c))


def test_a_run_recorded_before_a_default_moved_resumes_with_what_it_ran(tiny_llama, toy_file, tmp_path):
    """Records written before update_rule existed and dtype had per-kind defaults carry neither:
    they ran plain SGD in fp32, and resuming compares against that, not against today's defaults."""
    old = dict(num_steps=4, eval_steps=2, eval_at_start=False, update_rule="sgd", dtype="float32", noise="gaussian")
    spec = toy_spec(tiny_llama, toy_file, output_dir=str(tmp_path / "old"), **old)
    stop_after(spec, 2)
    path = tmp_path / "old" / "checkpoints" / "step-000002" / TRAJECTORY_FILE
    record = json.loads(path.read_text())
    for key in ("update_rule", "dtype", "noise", "freeze_lora_a"):
        del record["config"][key]
    path.write_text(json.dumps(record))
    assert prepare(dataclasses.replace(spec, resume=True)).resume_from.endswith("step-000002")
    moved = shutil.copytree(tmp_path / "old", tmp_path / "moved")  # a run folder moved elsewhere resumes too
    assert prepare(dataclasses.replace(spec, resume=True, output_dir=str(moved))).resume_from.startswith(str(moved))
    # Today's defaults: the dtype left to "auto" takes what the record ran in (float32); a default
    # that is not chosen per machine is a change of settings.
    today = dataclasses.replace(spec, resume=True, update_rule=None, dtype=None, noise=None)
    with pytest.raises(ValueError, match="other settings \\(update_rule: 'sgd' -> 'normalized'\\)"):
        prepare(today)
    assert prepare(dataclasses.replace(today, update_rule="sgd")).config.dtype == "float32"


# ---------------------------------------------------------------- a pinned trajectory

# The first three steps of a seeded run on the tiny Llama of conftest.py (seed 1234, rank 4, paired
# +/-eps forward, lr 1e-2, eps 1e-2, batch 4 of TASK). If one of these changes, the way z is drawn,
# the order of the trainable tensors, or the step seeds changed: old trajectories no longer replay.
# z comes from torch.Generator on the tensor's device; CPU and CUDA generators draw different numbers
# from the same seed, so a trajectory replays bit for bit only on the kind of device that recorded it.
# Pinned for both kinds of z: Gaussian (the MeZO paper's, LoRA's default) and Rademacher (full weights').
PINNED_SEEDS = [[1077755812133460511], [836039650763798036], [322137023740435929]]
PINNED = {  # noise: (projected gradients, adapter checksum after the three steps)
    "gaussian": ([0.3012657165527344, -1.733994483947754, -0.9564876556396484],
                 [-1.3131249051803024, 74.28441135942558, -9.298823199317386]),
    "rademacher": ([2.8438803972345994, 1.341879181968686, 1.9723652367427125],
                   [-0.5791404955089092, 92.23977379500866, -10.431469542554389]),
}


def adapter_checksum(tensors) -> list[float]:
    """Sum, absolute sum and a position-weighted sum over the tensors in order: any change of the
    values, or of which tensor comes where, moves at least one of them."""
    flat = [t.detach().double().flatten() for t in tensors]
    weighted = sum(((i + 1) * (t * torch.linspace(1, 2, t.numel(), dtype=torch.float64)).sum()).item()
                   for i, t in enumerate(flat))
    return [sum(t.sum().item() for t in flat), sum(t.abs().sum().item() for t in flat), weighted]


@pytest.mark.parametrize("noise", sorted(PINNED))
def test_first_three_steps_are_pinned(tmp_path, tiny_llama, noise):
    cfg = MeZOConfig(lora_rank=4, lora_alpha=8, batch_size=4, num_steps=3, learning_rate=1e-2, epsilon=1e-2,
                     seed=1234, device="cpu", progress_bar=False, eval_at_start=False, dtype="float32",
                     update_rule="sgd", noise=noise)  # the settings the numbers were pinned with
    with trainer_for(MeZOTrainer, tiny_llama, cfg) as tr:
        assert tr.trainable.minus is not None  # the paired forward, the default on a fresh runner
        tr.train(TASK)
        seeds = [s for s, _ in tr.trajectory.steps]
        grads = [g[0] for _, g in tr.trajectory.steps]
        checksum = adapter_checksum(tr.trainable.tensors)
    assert seeds == PINNED_SEEDS
    assert grads == pytest.approx(PINNED[noise][0], rel=1e-3)
    assert checksum == pytest.approx(PINNED[noise][1], rel=1e-5)


@pytest.mark.parametrize("top_layers,freeze_a", [(1, False), (None, True)])
def test_fewer_lora_tensors_perturbed_leave_the_others_at_their_start(tiny_llama, toy_file, tmp_path, top_layers,
                                                                     freeze_a):
    """lora_layers / freeze_lora_a: only the chosen tensors move; the saved adapter is still whole,
    and a replay of the run lands on the same weights."""
    spec = toy_spec(tiny_llama, toy_file, num_steps=3, eval_steps=3, eval_at_start=False, lora_layers=top_layers,
                    freeze_lora_a=freeze_a, output_dir=str(tmp_path / "run"))
    mezo_run = start_run(prepare(spec))
    try:
        lora = mezo_run.trainer.trainable.lora
        before = {t.name: t.pool.clone() for t in lora.tensors}
        names = mezo_run.trainer.trainable.names
        assert names and len(names) < len(before)
        assert all(".layers.1." in n for n in names) if top_layers else all(".lora_B." in n for n in names)
        mezo_run.run_to_end()
        after = {t.name: t.pool.clone() for t in lora.tensors}
    finally:
        release_model_runner(mezo_run.trainer.runner)
    for name in before:
        assert torch.equal(before[name], after[name]) == (name not in names), name
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert set(saved) == set(before)
    out = replay(str(tmp_path / "run"), str(tmp_path / "replayed"))
    replayed = load_file(f"{out}/adapter_model.safetensors")
    assert all(torch.equal(replayed[n], saved[n]) for n in saved)


@pytest.mark.parametrize("rule", ["sign", "normalized"])
def test_update_rules_move_by_their_coefficients_and_resume_exactly(tiny_llama, toy_file, tmp_path, rule):
    """sign / normalized steps: the first step moves theta by -lr * coefficient * z (checked against
    z drawn again), and a run stopped and resumed ends where a straight run does."""
    common = dict(num_steps=4, eval_steps=2, eval_at_start=False, update_rule=rule, paired_forward=False)
    mezo_run = start_run(prepare(toy_spec(tiny_llama, toy_file, output_dir=str(tmp_path / "a"), **common)))
    try:
        trainer = mezo_run.trainer
        before = [t.clone() for t in trainer.trainable.tensors]
        mezo_run.advance()
        (seed,), (g,) = trainer.trajectory.steps[0]
        coefficient = math.copysign(1.0, g) if rule == "sign" else g / abs(g)  # the first RMS is |g|
        for i, (b, t) in enumerate(zip(before, trainer.trainable.tensors)):
            assert torch.allclose(t, b - 5e-2 * coefficient * draw_z(seed, i, b, {}), atol=1e-6)
        result_a = mezo_run.run_to_end()
        weights_a = [t.clone() for t in trainer.trainable.tensors]
    finally:
        release_model_runner(mezo_run.trainer.runner)
    spec_b = toy_spec(tiny_llama, toy_file, output_dir=str(tmp_path / "b"), **common)
    stop_after(spec_b, 2)
    run_c = start_run(prepare(dataclasses.replace(spec_b, resume=True)))
    try:
        result_c = run_c.run_to_end()
        assert all(torch.equal(a, c) for a, c in zip(weights_a, run_c.trainer.trainable.tensors))
    finally:
        release_model_runner(run_c.trainer.runner)
    assert result_c["train_loss"] == result_a["train_loss"]
    replayed = load_file(replay(str(tmp_path / "a"), str(tmp_path / "replayed")) + "/adapter_model.safetensors")
    saved = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(replayed[n], saved[n]) for n in saved)


def test_the_dtype_is_chosen_for_the_machine_recorded_and_kept_on_resume(tiny_llama, toy_file, tmp_path, monkeypatch):
    """Left to its default, causal LoRA runs in bf16 only where the CPU computes it natively; the
    choice and its reason go into summary.json; a resumed run keeps the dtype it started in, on a
    machine that would choose otherwise; a dtype given explicitly wins."""
    spec = toy_spec(tiny_llama, toy_file, output_dir=str(tmp_path / "run"), num_steps=4, eval_steps=2,
                    eval_at_start=False, dtype=None)
    monkeypatch.setenv("SGLANG_MEZO_ASSUME_BF16", "1")  # a machine with AMX
    stop_after(spec, 2)
    summary_json = tmp_path / "run" / "summary.json"
    monkeypatch.setenv("SGLANG_MEZO_ASSUME_BF16", "0")  # the run moves to a machine without bf16
    assert prepare(dataclasses.replace(spec, output_dir=str(tmp_path / "fresh"))).config.dtype == "float32"
    plan = prepare(dataclasses.replace(spec, resume=True))
    assert plan.config.dtype == "bfloat16"
    assert plan.dtype_choice.reason == "bfloat16: the dtype the resumed run was started in"
    result = run(plan)
    assert result["config"]["dtype"] == "bfloat16"
    recorded = json.loads(summary_json.read_text())
    assert recorded["dtype_choice"] == {"dtype": "bfloat16", "reason": "bfloat16: the dtype the resumed run was started in"}
    with pytest.raises(ValueError, match="dtype: 'bfloat16' -> 'float32'"):
        prepare(dataclasses.replace(spec, resume=True, dtype="float32"))
    fresh = run(prepare(dataclasses.replace(spec, output_dir=str(tmp_path / "fresh32"), num_steps=1, eval_steps=1,
                                            report_to=("tensorboard",))))
    assert (tmp_path / "fresh32" / "learning_curves.png").is_file()
    assert list((tmp_path / "fresh32" / "tensorboard").glob("events.out.tfevents.*"))
    assert fresh["config"]["dtype"] == "float32"
    assert fresh["dtype_choice"]["reason"].startswith("float32: this CPU (") and "no bf16 instructions" in \
        fresh["dtype_choice"]["reason"]
