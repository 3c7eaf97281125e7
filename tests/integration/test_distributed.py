"""Data-parallel MeZO (2 worker processes on this machine) and shard-consistent noise.

The workers are real processes running the CLI: launched by hand with torchrun's variables
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: nothing kills the others when one dies, as on
separate machines) or with ``--nproc 2`` (which runs torchrun). Each uses one torch thread.

Two things of the one-process path are not invariant to how the global batch is split, at float32
rounding. (1) The paired forward (+eps and -eps passes of a LoRA step as one batch over two adapter
slots): with SGLang's torch_native LoRA backend a sequence's logits change in the last bits with the
batch's make-up; runs that compare at 1e-6 use ``--no-paired-forward`` (per-example logits are then
bitwise the same in a batch of 8 as in a batch of 4). (2) The objective's loss: the library reduces
it in float64 (``MeZOMLMTrainer.loss_from_logits``); in float32 its rounding of L+ and L- (~3e-8 on a
loss of 0.7) alone moved g by ~1e-5 relative between a mean over 8 examples and the weighted mean of
two means over 4.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sglang.srt.mezo.engine.tensor_parallel import tensor_parallel_layouts
from sglang.srt.mezo.parallel.launch import WorkerEnv, isolate_sglang
from sglang.srt.mezo.server.local_server import free_port
from sglang.srt.mezo.zo.noise import ShardLayout, draw_z
from sglang.srt.mezo.zo.trajectory import Trajectory
from sglang.srt.mezo.zo.update import apply_update

STEPS, EVAL_EVERY = 160, 40
CLI = [sys.executable, "-m", "sglang.srt.mezo_mlm_trainer"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _argv(model, data, out, *more) -> list[str]:
    return ["--model-path", model, "--train-file", data, "--eval-file", data, "--batch-size", "8",
            "--num-steps", str(STEPS), "--eval-steps", str(EVAL_EVERY), "--learning-rate", "1e-2",
            "--seed", "7", "--output-dir", str(out), "--quiet", "--no-paired-forward", *more]


def _workers(argv, port, n=2, timeout=60) -> list[subprocess.Popen]:
    return [subprocess.Popen([*CLI, *argv, "--dist-timeout", str(timeout)],
                             env=_env(RANK=str(r), WORLD_SIZE=str(n), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(n),
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(n)]


def _steps_logged(out) -> int:
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max([json.loads(line)["step"] for line in f if line.strip()] or [0])


def _one_process_and_two_workers(argv, root) -> None:
    """Run ``argv(out)`` as one process into ``root/one`` and as two data-parallel workers into ``root/two``."""
    one = subprocess.run([*CLI, *argv(root / "one")], env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    for w in _workers(argv(root / "two"), free_port()):
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]


def _grads(out) -> tuple[list, list]:
    t = Trajectory.load(str(out))
    return [s for s, _ in t.steps], [g[0] for _, g in t.steps]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama, toy_file):
    """One process, the whole global batch (8) each step."""
    out = tmp_path_factory.mktemp("one") / "run"
    done = subprocess.run([*CLI, *_argv(tiny_llama, toy_file, out)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_two_workers_follow_one_process_survive_a_kill_and_resume(tmp_path, reference,
                                                                  tiny_llama, toy_file):
    out = tmp_path / "dp"
    argv = _argv(tiny_llama, toy_file, out)
    rank0, rank1 = _workers(argv, free_port())
    try:
        deadline = time.time() + 120
        while _steps_logged(out) <= EVAL_EVERY + 5 and rank0.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert rank0.poll() is None, f"rank 0 ended before the kill:\n{rank0.communicate()[1][-3000:]}"
        rank1.send_signal(signal.SIGKILL)
        killed = time.time()
        _, err0 = rank0.communicate(timeout=90)
        stopped_after = time.time() - killed
    finally:
        for p in (rank0, rank1):
            if p.poll() is None:
                p.kill()
                p.communicate()
    # The survivor stops with an error naming the dead worker, well within its timeout (60 s).
    assert rank0.returncode == 1, err0[-3000:]
    assert "worker 1 (pid %d) is no longer running" % rank1.pid in err0, err0[-3000:]
    assert "--resume" in err0
    assert stopped_after < 30

    # Both workers restart with --resume: rank 0's checkpoint puts both where the run stopped.
    rank0, rank1 = _workers(argv + ["--resume"], free_port())
    _, err0 = rank0.communicate(timeout=300)
    _, err1 = rank1.communicate(timeout=60)
    assert rank0.returncode == 0 and rank1.returncode == 0, (err0[-3000:], err1[-3000:])
    # Exit 0 also means the ranks' trained adapters were bitwise identical: the workers compare their
    # sha256 at the end and fail otherwise (the digest itself is checked in the --nproc test).

    # The trajectory of 2 workers (killed, resumed) is that of 1 process with the same global batch.
    seeds_1, grads_1 = _grads(reference)
    seeds_2, grads_2 = _grads(out)
    assert len(seeds_2) == STEPS and seeds_2 == seeds_1
    assert grads_2 == pytest.approx(grads_1, rel=1e-6, abs=1e-9)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"event": "step"' in line]
    assert steps == list(range(1, STEPS + 1))  # the lines of the killed run after its checkpoint were redone


def test_two_workers_weight_a_completion_loss_by_target_tokens(tmp_path, tiny_chat_llama):
    """A completion loss is a mean over target tokens: shards with unequal token counts must combine
    by tokens (not examples) for two workers to follow one process."""
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": (w + " ") * k}]}
            for k, w in zip((1, 9, 2, 7, 1, 8, 3, 6), ("a", "b", "c", "d", "e", "f", "g", "h"))]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = lambda out: ["--model-path", tiny_chat_llama, "--objective", "completion", "--train-file", str(data),  # noqa: E731
                        "--batch-size", "8", "--num-steps", "4", "--eval-steps", "0", "--no-eval-at-start",
                        "--learning-rate", "1e-2", "--dtype", "float32", "--seed", "7", "--output-dir", str(out),
                        "--quiet", "--no-paired-forward"]
    _one_process_and_two_workers(argv, tmp_path)
    assert _grads(tmp_path / "two") == (_grads(tmp_path / "one")[0], pytest.approx(_grads(tmp_path / "one")[1], rel=1e-6))


@pytest.mark.parametrize("shaping", [[], ["--reward-shaping", "z-score", "--n-spsa", "3"],
                                     ["--estimator", "fzoo", "--n-spsa", "3"]], ids=["difference", "es", "fzoo"])
def test_two_workers_follow_one_process_on_a_reward_run(tmp_path, tiny_chat_llama, shaping):
    """A reward step generates and grades each worker's shard of the prompts: the combined mean
    grade, and so the projected gradient, is the single process's, with sampled answers too (each
    prompt's sampling seed follows the prompt, not its row in the worker's shard). ES's population:
    the workers z-score the combined rewards, so every member's g is the single process's; FZOO's
    sigma is that of the combined probes' rewards, so every probe's g is too."""
    rows = [{"messages": [{"role": "user", "content": f"say {w}"}], "answer": w}
            for w in ("a", "b", "c", "d", "e", "f", "g", "h")]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
                                  "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}))
    argv = lambda out: ["--model-path", tiny_chat_llama, "--task", "reinforcement", "--train-file", str(data),  # noqa: E731
                        "--grader", str(grader), "--max-new-tokens", "4", "--batch-size", "8", "--num-steps", "3",
                        "--temperature", "1.0",
                        "--eval-steps", "0", "--no-eval-at-start", "--learning-rate", "1e-2", "--epsilon", "1e-1",
                        "--dtype", "float32", "--seed", "7", "--output-dir", str(out), "--quiet", *shaping]
    _one_process_and_two_workers(argv, tmp_path)

    def losses(out) -> list[float]:
        with open(out / "metrics.jsonl") as f:
            return [json.loads(line)["loss"] for line in f if '"event": "step"' in line]

    # Each step grades new draws; a worker drawing by its shard's rows would grade other answers.
    assert len(set(losses(tmp_path / "one"))) == 3
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-9)
    seeds, grads = _grads(tmp_path / "one")
    assert _grads(tmp_path / "two") == (seeds, pytest.approx(grads, rel=1e-6))
    if shaping:
        one, two = (_all_grads(tmp_path / d) for d in ("one", "two"))
        assert all(len(g) == 3 for g in one) and two == [pytest.approx(g, rel=1e-6, abs=1e-9) for g in one]


def _all_grads(out) -> list[list[float]]:
    return [list(g) for _, g in Trajectory.load(str(out)).steps]


def test_nproc_runs_torchrun_with_identical_workers(tmp_path, reference, tiny_llama, toy_file):
    out = tmp_path / "nproc"
    argv = _argv(tiny_llama, toy_file, out)
    argv[argv.index("--num-steps") + 1] = "12"
    argv.remove("--quiet")  # rank 0's log lines show; the other worker's never do
    argv.remove("--no-paired-forward")  # the default: +/-eps passes in one batch over two adapter slots
    done = subprocess.run([sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", *argv, "--nproc", "2"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data-parallel worker 0 of 2" in done.stderr and "worker 1 of 2" not in done.stderr
    line = next(x for x in done.stderr.splitlines() if "bitwise identical on 2 workers" in x)
    digest = line.split("sha256 ")[1].split(")")[0]
    # That digest is the saved adapter's: every rank ended with the tensors rank 0 saved.


    names = Trajectory.load(str(out)).tensor_names
    saved = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))

    h = hashlib.sha256()
    for name in names:
        h.update(saved[name].contiguous().view(torch.uint8).numpy().tobytes())
    assert h.hexdigest() == digest
    seeds_1, grads_1 = _grads(reference)
    seeds_2, grads_2 = _grads(out)
    assert seeds_2 == seeds_1[:12]
    # The paired forward (the default), whose logits move with the batch's make-up at float32
    # rounding: close, not 1e-6.
    assert grads_2 == pytest.approx(grads_1[:12], rel=1e-3, abs=1e-6)


def test_workers_that_search_the_prompt_agree_on_it(tmp_path, tiny_llama, toy_file):
    """template/label_words 'auto' and calibrate: each worker searches; they must choose alike."""
    out = tmp_path / "auto"
    argv = _argv(tiny_llama, toy_file, out, "--template", "auto", "--label-words", "auto", "--calibrate",
                 "--task", "sst-2")
    argv[argv.index("--num-steps") + 1] = "4"
    done = subprocess.run([sys.executable, "-m", "sglang.srt.mezo_mlm_trainer", *argv, "--nproc", "2"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = json.loads((out / "prompt.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt"]["template"] == chosen["template"] and chosen["calibration"]


# ---------------------------------------------------------------- no processes: the pieces


def test_worker_env_and_isolation(monkeypatch):
    assert WorkerEnv.from_environ({"WORLD_SIZE": "1"}) is None
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        WorkerEnv.from_environ({"WORLD_SIZE": "2", "RANK": "0"})
    env = WorkerEnv.from_environ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500",
                                  "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (env.rank, env.world_size, env.master_port, env.agent_store) == (1, 2, 29500, True)
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "29500", "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SGLANG_DISTRIBUTED_INIT_METHOD_OVERRIDE", raising=False)
    method = isolate_sglang(env)
    assert method.startswith("file://") and os.environ["SGLANG_DISTRIBUTED_INIT_METHOD_OVERRIDE"] == method
    assert not any(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"))


def test_shard_of_the_noise_is_the_noise_of_the_shard():
    seed, index = 123456789, 5
    full = torch.randn(12, 8)
    z_full = draw_z(seed, index, full, {})
    # Unsharded tensors: z as it always was (what the pinned trajectory test relies on).
    gen = torch.Generator().manual_seed((seed * 1_000_003 + index * 7_919) % (2**63 - 1))
    assert torch.equal(z_full, torch.randn(12, 8, generator=gen))
    for tp in (2, 3):
        for dim in (0, 1):  # column-parallel (output rows) and row-parallel (input columns)
            if full.shape[dim] % tp:
                continue
            part = full.shape[dim] // tp
            for rank in range(tp):
                shard = full.narrow(dim, rank * part, part).clone()
                layout = ShardLayout(tuple(full.shape), dim, ((rank * part, part),))
                assert torch.equal(draw_z(seed, index, shard, {}, layout), z_full.narrow(dim, rank * part, part))
    # A fused QKV-style shard: q, k and v rows of this rank, from three places of the full tensor.
    q, kv, tp, rank = 6, 3, 3, 1
    sizes, pieces, offset = [q, kv, kv], [], 0
    for size in sizes:
        pieces.append((offset + rank * size // tp, size // tp))
        offset += size
    layout = ShardLayout((12, 8), 0, tuple(pieces))
    shard = torch.cat([full[s:s + n] for s, n in pieces])
    expected = torch.cat([z_full[s:s + n] for s, n in pieces])
    assert torch.equal(draw_z(seed, index, shard, {}, layout), expected)
    # An update of the shards is the shard of the update of the full tensor, bit for bit.
    seeds, grads = [11, 22], [0.3, -1.7]
    updated = [full.clone()]
    apply_update(updated, [True], seeds, grads, 1e-2, 0.1, {})
    for rank in range(2):
        shard = [full[:, rank * 4:(rank + 1) * 4].clone()]
        apply_update(shard, [True], seeds, grads, 1e-2, 0.1, {}, [ShardLayout((12, 8), 1, ((rank * 4, 4),))])
        assert torch.equal(shard[0], updated[0][:, rank * 4:(rank + 1) * 4])
    with pytest.raises(ValueError, match="shape"):
        draw_z(seed, index, torch.zeros(5, 8), {}, ShardLayout((12, 8), 0, ((0, 6),)))


def test_layouts_from_sglang_parallel_layers():
    """The layouts read off SGLang's parallel-linear attributes (tp=2, rank 1), on stand-in modules
    (SGLang 0.5.23 does not start tp=2 on a CPU; see the report)."""

    def layer(kind, shape, attr, **fields):
        m = type(kind, (torch.nn.Module,), {})()
        m.weight = torch.nn.Parameter(torch.zeros(shape))
        setattr(m.weight, attr, 0 if attr == "output_dim" else 1)
        m.tp_size, m.tp_rank = 2, 1
        for k, v in fields.items():
            setattr(m, k, v)
        return m

    model = torch.nn.Module()
    model.qkv = layer("QKVParallelLinear", (8 + 4 + 4, 16), "output_dim", total_num_heads=4, total_num_kv_heads=2,
                      head_size=4, v_head_size=4, num_kv_head_replicas=1)
    model.gate_up = layer("MergedColumnParallelLinear", (20, 16), "output_dim", output_sizes=[20, 20])
    model.o = layer("RowParallelLinear", (16, 8), "input_dim")
    model.norm = torch.nn.LayerNorm(16)
    names = ["qkv.weight", "gate_up.weight", "o.weight", "norm.weight"]
    assert tensor_parallel_layouts(model, names) == [
        ShardLayout((32, 16), 0, ((8, 8), (16 + 4, 4), (24 + 4, 4))),
        ShardLayout((40, 16), 0, ((10, 10), (30, 10))),
        ShardLayout((16, 16), 1, ((8, 8),)),
        None,
    ]
    model.emb = layer("VocabParallelEmbedding", (50, 16), "output_dim")
    with pytest.raises(NotImplementedError, match="emb.weight"):
        tensor_parallel_layouts(model, names + ["emb.weight"])
