"""Hyperparameters a user who only names the task gets, by (model kind, trainable set), and what an
old record ran with for settings it lacks. Where each default comes from: README, "Defaults".

>>> resolve_hyperparameters("causal", num_steps=400)["eval_steps"]
100
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

# Hyperparameters a user who only names the task gets, by (model kind, trainable set). They are
# the same for every task, as in the paper, whose grids do not depend on the task.
# - causal + LoRA: calibrated here on SmolLM2-135M, 16-shot SST-2 (project notes: lr 1e-4 does not
#   move, 1e-2 diverges, lr 1e-3 / eps 1e-2 reaches ~76% dev after 1000 steps of batch 16). Rank 2,
#   the normalized rule and bf16 won the lever grid (benchmarks/results/accuracy.md): fewer
#   perturbed parameters learn faster, the normalized step stops the late divergence lr 1e-3 had on
#   some data seeds and on TREC, and bf16 halves the step time on a CPU with bf16 matrix units at
#   the same accuracy; without them PyTorch emulates bf16 and float32 is several times faster, so
#   dtype "auto" chooses on the machine where the run starts (engine/hardware.py). The Adam-LoRA
#   baseline and a served adapter keep rank 8's memory budget.
# - noise: z is Rademacher for full-weight runs, where drawing z is most of a step's overhead (a
#   step at batch 16, add/subtract restore, costs 1.1-1.3x two forwards with the sign kernel against
#   2.1-2.3x with Gaussian z; benchmarks/results/perf_steps.md); SPSA with random signs is unbiased like MeZO's Gaussian, and on causal-LM LoRA
#   (SST-2 16-shot, 1,000 steps, data seeds 42/13/21) it reached 84.3/82.7/72.1 against Gaussian's
#   81.5/80.4/79.5, and SST-5 34.3 against 31.7: no consistent difference (a mean of 79.7 against
#   80.5 on SST-2). LoRA keeps Gaussian: there z costs next to nothing.
# - causal + full: the paper's OPT setting (lr {1e-6, 1e-7}, eps 1e-3, batch 16, 20K steps).
# - masked + full: the paper's RoBERTa-large setting (batch 64, eps 1e-3, lr 1e-6, 100K steps,
#   eval every 10K). 100K steps of batch 64 is long: days on a CPU, hours on a GPU.
# - masked + LoRA: the paper's RoBERTa LoRA grid (r 8, alpha 16, lr 1e-4, eps 1e-3, wd 0.1).
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("causal", "lora"): dict(learning_rate=1e-3, epsilon=1e-2, weight_decay=0.0, batch_size=16,
                             num_steps=1000, eval_steps=250, lora_rank=2, update_rule="normalized",
                             dtype="auto", noise="gaussian", lr_schedule="constant"),
    ("causal", "full"): dict(learning_rate=1e-6, epsilon=1e-3, weight_decay=0.0, batch_size=16,
                             num_steps=20000, eval_steps=4000, lora_rank=8, update_rule="sgd", dtype="float32",
                             noise="rademacher", lr_schedule="constant"),
    ("masked", "full"): dict(learning_rate=1e-6, epsilon=1e-3, weight_decay=0.0, batch_size=64,
                             num_steps=100000, eval_steps=10000, lora_rank=8, update_rule="sgd", dtype="float32",
                             noise="rademacher", lr_schedule="constant"),
    ("masked", "lora"): dict(learning_rate=1e-4, epsilon=1e-3, weight_decay=0.1, batch_size=64,
                             num_steps=100000, eval_steps=10000, lora_rank=8, update_rule="sgd", dtype="float32",
                             noise="gaussian", lr_schedule="constant"),
}


# Where an objective's own comparison, on rows held out of its task's training file, chose otherwise
# than its kind's defaults (benchmarks/generative_defaults.py; results/generative_defaults.md):
# - causal + LoRA, "completion" (teacher-forced answer tokens): a larger lr. Its loss averages many
#   target tokens a batch, a less noisy signal than one label word's, so a longer step pays; and a
#   linear decay to 0: at a constant 3e-3 the loss turns back up after about 200 steps (a 500-step
#   chat job handed back a model below the base), while the decayed steps keep refining. Rank 1
#   lowered the loss faster but answered worse: README, "Defaults".
OBJECTIVE_DEFAULTS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("causal", "lora", "completion"): dict(learning_rate=3e-3, lr_schedule="linear"),
}


#: What a recorded spec that lacks a setting ran with: records written before the setting existed
#: (or before its default moved to DEFAULTS) carry no value for it, and resume and replay must
#: repeat the run they record, not today's default.
RECORD_FALLBACKS: dict[str, Any] = {"update_rule": "sgd", "noise": "gaussian", "dtype": "float32",
                                    "freeze_lora_a": False, "lr_schedule": "constant", "validation_holdout": 0.0}


# The paper's main result per model family: full-parameter MeZO for RoBERTa, LoRA for decoders
# (which keeps the saved artifact small and, for the small models here, trains much faster).
DEFAULT_TRAINABLE = {"masked": "full", "causal": "lora"}


PER_KIND = "per model kind, see the table of defaults"


#: ``template``/``label_words`` value: chosen with forward passes before training
#: (:mod:`sglang.srt.mezo.training.prompt_search`).
AUTO = "auto"


#: Module names a LoRA adapter may target (HF names; SGLang fuses q/k/v and gate/up itself).
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


#: A RoBERTa masked LM's attention projections as HF and PEFT name them (there, q_proj/k_proj/v_proj
#: are aliases of these). Kept apart from SUPPORTED_TARGETS, which a decoder server may enable whole.
ENCODER_TARGETS = ("query", "key", "value")


def with_record_fallbacks(values: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded spec's values, with what older records ran with for the settings they lack."""
    return {**RECORD_FALLBACKS, **values}


def default_table(kind: str, trainable: Optional[str] = None, objective: Optional[str] = None) -> dict[str, Any]:
    """The defaults of a (kind, trainable, objective): :data:`DEFAULTS`, then :data:`OBJECTIVE_DEFAULTS`.

    >>> default_table("causal")["learning_rate"], default_table("causal", "lora", "completion")["learning_rate"]
    (0.001, 0.003)
    """
    trainable = trainable or DEFAULT_TRAINABLE[kind]
    if (kind, trainable) not in DEFAULTS:
        raise ValueError(f"trainable must be one of {sorted({t for _, t in DEFAULTS})}, got {trainable!r}")
    return {**DEFAULTS[(kind, trainable)], **OBJECTIVE_DEFAULTS.get((kind, trainable, objective), {})}


def resolve_hyperparameters(kind: str, trainable: Optional[str] = None, objective: Optional[str] = None,
                            **given: Any) -> dict[str, Any]:
    """The run's hyperparameters: what is given, else :func:`default_table` for (kind, trainable, objective).

    Without ``eval_steps``, evaluations are spaced as in the default schedule (4 per run for
    causal LoRA, 10 for the rest).

    >>> h = resolve_hyperparameters("causal", num_steps=400)
    >>> h["trainable"], h["learning_rate"], h["num_steps"], h["eval_steps"]
    ('lora', 0.001, 400, 100)
    >>> resolve_hyperparameters("causal", objective="completion")["learning_rate"]
    0.003
    """
    trainable = trainable or DEFAULT_TRAINABLE[kind]
    table = default_table(kind, trainable, objective)
    out = {"trainable": trainable}
    for name, default in table.items():
        out[name] = given.get(name) if given.get(name) is not None else default
    if given.get("eval_steps") is None and given.get("num_steps") is not None:
        fraction = table["eval_steps"] / table["num_steps"]
        out["eval_steps"] = max(1, round(out["num_steps"] * fraction))
    if out["num_steps"] < 0:
        raise ValueError(f"num_steps must be >= 0, got {out['num_steps']}")
    return out
