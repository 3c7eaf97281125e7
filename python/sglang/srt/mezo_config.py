"""The run spec: everything one MeZO fine-tuning run needs, in one dataclass.

:class:`MeZOConfig` is the one list of a run's settings, in the style of PEFT's configs: each
field carries its help text, fixed sets of values are ``Literal`` types, and ``__post_init__``
checks every value and says how to fix a bad one. Everything else is made from it:

- the CLI's flags (:func:`add_config_arguments`, :func:`config_from_arguments`);
- ``mezo_mlm_finetune(...)``, which builds one from its keyword arguments;
- a server job's request body (:meth:`MeZOConfig.from_dict`);
- a run's ``summary.json``, which records the resolved spec so that the run can be made again
  (:meth:`MeZOConfig.load`).

Hyperparameters left as None take :data:`DEFAULTS` for the model's kind (masked or causal LM)
and the trainable set; :meth:`MeZOConfig.resolve` fills them in once, when the model is known.
This module imports neither torch nor SGLang.

>>> spec = MeZOConfig(task="SST2", num_steps=400)
>>> spec.task, spec.learning_rate
('sst-2', None)
>>> run = spec.resolve("causal")
>>> run.trainable, run.learning_rate, run.epsilon, run.eval_steps
('lora', 0.001, 0.01, 100)
>>> MeZOConfig.from_dict({"task": "rte", "learning_rat": 1e-3})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown setting 'learning_rat' (did you mean 'learning_rate'?); known settings: ...
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

from sglang.srt.mezo_prompts import check_label_words, check_template, parse_label_words
from sglang.srt.mezo_tasks import get_task

Trainable = Literal["lora", "full"]
Objective = Literal["ce", "accuracy"]
Schedule = Literal["constant", "linear"]
Noise = Literal["gaussian", "rademacher"]  # mezo_noise.NoiseKind
UpdateRuleName = Literal["sgd", "sign", "normalized", "adam"]
DType = Literal["float32", "float16", "bfloat16"]

# Hyperparameters a user who only names the task gets, by (model kind, trainable set). They are
# the same for every task, as in the paper, whose grids do not depend on the task.
# - causal + LoRA: calibrated here on SmolLM2-135M, 16-shot SST-2 (project notes: lr 1e-4 does not
#   move, 1e-2 diverges, lr 1e-3 / eps 1e-2 reaches ~76% dev after 1000 steps of batch 16). Rank 2,
#   the normalized rule and bf16 won the lever grid (benchmarks/results/accuracy.md): fewer
#   perturbed parameters learn faster, the normalized step stops the late divergence lr 1e-3 had on
#   some data seeds and on TREC, and bf16 halves the step time on a CPU with bf16 matrix units at
#   the same accuracy. The Adam-LoRA baseline and a served adapter keep rank 8's memory budget.
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
                             dtype="bfloat16", noise="gaussian"),
    ("causal", "full"): dict(learning_rate=1e-6, epsilon=1e-3, weight_decay=0.0, batch_size=16,
                             num_steps=20000, eval_steps=4000, lora_rank=8, update_rule="sgd", dtype="float32",
                             noise="rademacher"),
    ("masked", "full"): dict(learning_rate=1e-6, epsilon=1e-3, weight_decay=0.0, batch_size=64,
                             num_steps=100000, eval_steps=10000, lora_rank=8, update_rule="sgd", dtype="float32",
                             noise="rademacher"),
    ("masked", "lora"): dict(learning_rate=1e-4, epsilon=1e-3, weight_decay=0.1, batch_size=64,
                             num_steps=100000, eval_steps=10000, lora_rank=8, update_rule="sgd", dtype="float32",
                             noise="gaussian"),
}
#: What a recorded spec that lacks a setting ran with: records written before the setting existed
#: (or before its default moved to DEFAULTS) carry no value for it, and resume and replay must
#: repeat the run they record, not today's default.
RECORD_FALLBACKS: dict[str, Any] = {"update_rule": "sgd", "noise": "gaussian", "dtype": "float32",
                                    "freeze_lora_a": False}
# The paper's main result per model family: full-parameter MeZO for RoBERTa, LoRA for decoders
# (which keeps the saved artifact small and, for the small models here, trains much faster).
DEFAULT_TRAINABLE = {"masked": "full", "causal": "lora"}
PER_KIND = "per model kind, see the table of defaults"
#: ``template``/``label_words`` value: chosen with forward passes before training (mezo_prompt_search).
AUTO = "auto"
#: Module names a LoRA adapter may target (HF names; SGLang fuses q/k/v and gate/up itself).
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: A RoBERTa masked LM's attention projections as HF and PEFT name them (there, q_proj/k_proj/v_proj
#: are aliases of these). Kept apart from SUPPORTED_TARGETS, which a decoder server may enable whole.
ENCODER_TARGETS = ("query", "key", "value")
#: How a field with a fixed set of values is named in the error for a value outside it.
_CHOICE_NAMES = {"trainable": "trainable set"}


def _spec(default: Any, help: str, *, cli: Union[str, bool, None] = None, group: str) -> Any:
    """A field with its help text; ``cli`` renames its flag (False: no flag)."""
    return field(default=default, metadata={"help": help, "group": group, "cli": cli})


@dataclass
class MeZOConfig:
    """A MeZO fine-tuning run: model, task and data, prompt, what to train, hyperparameters,
    evaluation schedule and output. See the module docstring; every field's help is its doc."""

    # ---- model and data
    model_path: str = _spec("smollm2-135m", "checkpoint folder, Hugging Face hub id, or the built-in alias "
                            "'smollm2-135m'", group="model and data")
    task: str = _spec("sst-2", "task preset: sst-2, sst-5, trec, mnli, snli, rte, cb, boolq", group="model and data")
    train_file: Optional[str] = _spec(None, "training data (.tsv/.txt/.jsonl/.json/.csv, a save_to_disk folder "
                                      "or hub:NAME) (default: the task's training set from ../shared/data if "
                                      "present, else the hub)", group="model and data")
    eval_file: Optional[str] = _spec(None, "evaluation data, same formats (default: the task's dev set; TREC: a "
                                     "k-shot dev split disjoint from the training examples)", group="model and data")
    k_shot: Optional[int] = _spec(None, "examples per class sampled from the training data, 0 for all (default: "
                                  "16 for the task's own training set, all of a --train-file)", group="model and data")
    seed: int = _spec(42, "data, LoRA-init and perturbation seed", group="model and data")
    max_eval_examples: Optional[int] = _spec(None, "evaluate on at most N examples (a seeded sample) for quick "
                                             "runs (default: all)", group="model and data")

    # ---- prompt
    template: Optional[str] = _spec(None, "prompt template with one [MASK] and optionally <S1>/<S2>; without "
                                    "them it is appended to the input; 'auto': the best of the task's candidate "
                                    "templates on the k-shot dev split (default: the task preset's)", group="prompt")
    label_words: Union[dict[str, str], Literal["auto"], None] = _spec(
        None, "label words as LABEL:WORD pairs, e.g. 0:terrible,1:great; 'auto': chosen by their likelihood at "
        "the mask over the k-shot training examples, then on the k-shot dev split, as LM-BFF does "
        "(default: the task preset's)", group="prompt")
    calibrate: bool = _spec(False, "contextual calibration (Zhao et al. 2021): divide the label words' "
                            "probabilities by theirs on content-free inputs ('N/A', ''), in training and "
                            "evaluation", group="prompt")
    use_space_prefix: bool = _spec(True, "give label words a leading space (' great'), as byte-level BPE and "
                                   "SentencePiece vocabularies spell a word inside a sentence", cli="space-prefix",
                                   group="prompt")
    objective: Objective = _spec("ce", "ce: cross-entropy over the label words; accuracy: minus accuracy "
                                 "(non-differentiable)", group="prompt")

    # ---- what to train
    trainable: Optional[Trainable] = _spec(None, "what MeZO trains: a LoRA adapter or every weight (default: lora "
                                           "for causal LMs, full for masked LMs)", group="what to train")
    lora_rank: Optional[int] = _spec(None, "LoRA rank (default: 2 for causal LMs, 8 for masked LMs)",
                                     group="what to train")
    lora_alpha: float = _spec(16.0, "LoRA alpha (scale alpha / rank)", group="what to train")
    lora_layers: Optional[int] = _spec(None, "LoRA: perturb and train only the adapter's tensors in the top N "
                                       "layers (fewer perturbed parameters: SPSA's variance grows with their number; "
                                       "default: all layers)", group="what to train")
    freeze_lora_a: bool = _spec(False, "LoRA: keep the A factors at their random initialisation and train only B "
                                "(LoRA-FA; half the perturbed parameters)", group="what to train")
    lora_target_modules: tuple[str, ...] = _spec(("q_proj", "v_proj"), "modules that get LoRA, comma-separated (RoBERTa: "
                                                 "query,value; q_proj/k_proj/v_proj mean query/key/value there)",
                                                 group="what to train")
    init_adapter: Optional[str] = _spec(None, "start from this PEFT adapter instead of a new one (B = 0)",
                                        group="what to train")

    # ---- hyperparameters
    num_steps: Optional[int] = _spec(None, f"MeZO steps, 0 for zero-shot evaluation only (default: {PER_KIND})",
                                     group="hyperparameters")
    batch_size: Optional[int] = _spec(None, f"examples per step (default: {PER_KIND})", group="hyperparameters")
    learning_rate: Optional[float] = _spec(None, f"learning rate (default: {PER_KIND})", group="hyperparameters")
    epsilon: Optional[float] = _spec(None, f"perturbation scale (default: {PER_KIND})", group="hyperparameters")
    weight_decay: Optional[float] = _spec(None, "weight decay, never on biases or norms (default: 0.1 for "
                                          "masked-LM LoRA, else 0)", group="hyperparameters")
    n_spsa: int = _spec(1, "perturbation directions averaged per step (n-SPSA)", group="hyperparameters")
    split_batch: bool = _spec(
        False, "LoRA: estimate each of the n_spsa directions on its own 1/n_spsa of the batch, all in the batch's "
        "one paired forward: n directions for the forwards of one (n_spsa = batch_size: one direction per example, "
        "like Flipout's per-example perturbations); needs 2 * n_spsa + 1 LoRA slots", group="hyperparameters")
    lr_schedule: Schedule = _spec("constant", "learning-rate schedule", group="hyperparameters")
    update_rule: Optional[UpdateRuleName] = _spec(
        None, "how a projected gradient g moves theta along z: sgd, by lr * g (MeZO); sign, by lr * sign(g); "
        "normalized, by lr * g / RMS(g), the RMS a running mean over the steps so far (Adam's second moment "
        "for the one number g: no state of the weights' size); adam, Adam on the estimate g z (ZO-Adam: two fp32 "
        "moments the size of the trainable tensors, LoRA only) (default: normalized for causal-LM LoRA, "
        "sgd otherwise)", group="hyperparameters")
    noise: Optional[Noise] = _spec(
        None, "the perturbation z: rademacher, random signs (Spall's SPSA; unbiased, and on a CPU "
        "applied by a compiled kernel at a ninth of Gaussian z's cost, which keeps a full-weight step near two forwards); gaussian, N(0, I) as in the MeZO paper "
        "(default: rademacher for full-weight runs, gaussian for LoRA)", group="hyperparameters")

    # ---- evaluation and output
    eval_steps: Optional[int] = _spec(None, "evaluate (and save) every N steps, 0 only at the end (default: 4 "
                                      "evaluations per run for causal-LM LoRA, 10 otherwise)",
                                      group="evaluation and output")
    eval_at_start: bool = _spec(True, "evaluate before the first step (the zero-shot accuracy)",
                                group="evaluation and output")
    output_dir: Optional[str] = _spec(None, "where to write the run: adapter, metrics.jsonl, trajectory, "
                                      "summary.json (default: runs/<task>-<timestamp>; from Python: nothing is "
                                      "written)", group="evaluation and output")
    resume: bool = _spec(False, "continue the run in output_dir from its latest checkpoint (exactly: the same "
                         "batches, step seeds and learning rates as a run that was never stopped)",
                         group="evaluation and output")

    # ---- runtime
    device: Optional[str] = _spec(None, "cpu, cuda or cuda:N (default: cuda if available, else cpu)", group="runtime")
    dtype: Optional[DType] = _spec(None, "weights and activations dtype (default: bfloat16 for causal-LM LoRA, "
                                   "float32 otherwise; on a CPU without bf16 instructions, float32 is faster)",
                                   group="runtime")
    max_total_tokens: int = _spec(8192, "KV-cache size of a runner built for the run (tokens)", group="runtime")
    exact_restore: bool = _spec(True, "restore weights after a perturbation from a copy (bitwise exact); off: "
                                "add/subtract, inexact in low precision but no copy of the trainable weights",
                                group="runtime")
    paired_forward: Optional[bool] = _spec(None, "LoRA: run the +eps and -eps passes as one batch over two adapter "
                                           "slots (default: whenever the runner has a free slot)", group="runtime")
    progress_bar: bool = _spec(True, "show progress bars", cli=False, group="runtime")

    def __post_init__(self) -> None:
        hints = _hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "lora_target_modules" and isinstance(value, (list, str)):
                value = tuple(value.split(",") if isinstance(value, str) else value)
                setattr(self, f.name, tuple(v.strip() for v in value))
            elif f.name == "label_words" and isinstance(value, str):
                setattr(self, f.name, AUTO if value.strip().lower() == AUTO else parse_label_words(value))
            elif f.name == "label_words" and isinstance(value, Mapping):
                setattr(self, f.name, {str(k) if not isinstance(k, bool) else str(k).lower(): w
                                       for k, w in value.items()})
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        self.task = get_task(self.task).name
        if not self.model_path.strip():
            raise ValueError("model_path is empty: give a checkpoint folder, a hub id or 'smollm2-135m'")
        _check_range("learning_rate", self.learning_rate, lambda v: v >= 0, ">= 0")
        _check_range("epsilon", self.epsilon, lambda v: v > 0, "a positive number")
        _check_range("weight_decay", self.weight_decay, lambda v: v >= 0, ">= 0")
        _check_range("lora_alpha", self.lora_alpha, lambda v: v > 0, "> 0")
        for name, low in (("num_steps", 0), ("eval_steps", 0), ("k_shot", 0), ("batch_size", 1), ("n_spsa", 1),
                          ("lora_rank", 1), ("lora_layers", 1), ("max_eval_examples", 1), ("max_total_tokens", 1)):
            _check_range(name, getattr(self, name), lambda v, low=low: v >= low, f">= {low}")
        unknown = [t for t in self.lora_target_modules if t not in SUPPORTED_TARGETS + ENCODER_TARGETS]
        if unknown or not self.lora_target_modules:
            raise ValueError(f"LoRA target modules {unknown or list(self.lora_target_modules)} are not supported; "
                             f"choose among {list(SUPPORTED_TARGETS)} (RoBERTa: {list(ENCODER_TARGETS)})")
        attention = {"q_proj", "k_proj", "v_proj"} & set(self.lora_target_modules)
        if attention and not {"q_proj", "v_proj"} <= attention:
            # SGLang stacks q/k/v into one qkv_proj adapter and fills in only a missing k_proj.
            raise ValueError(f"LoRA target modules {list(self.lora_target_modules)}: SGLang's LoRA loader needs "
                             "q_proj and v_proj together whenever one of q_proj/k_proj/v_proj is a target; "
                             "add the missing one (e.g. q_proj,v_proj), or use lora_layers / lora_rank for fewer "
                             "parameters")
        if self.template is not None and self.template != AUTO:
            check_template(self.template)
        if self.label_words is not None and self.label_words != AUTO:
            check_label_words(self.label_words)
        if self.device not in (None, "auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        if self.trainable == "full" and (self.lora_layers is not None or self.freeze_lora_a):
            raise ValueError("lora_layers and freeze_lora_a choose LoRA tensors: they need trainable='lora'")
        if self.update_rule == "adam" and self.trainable == "full":
            # Checked again after resolve(): a masked LM's default trainable set is every weight.
            raise ValueError("update_rule='adam' keeps Adam's two moments, fp32 tensors the size of the trainable "
                             "ones: with trainable='full' that is twice the model's memory again, and MeZO's point "
                             "is inference memory; use trainable='lora', or update_rule='normalized' (no state of "
                             "the weights' size)")
        if self.paired_forward and self.trainable == "full":
            raise ValueError("paired_forward runs the two passes on two LoRA slots: it needs trainable='lora'")
        if self.split_batch and (self.trainable == "full" or self.paired_forward is False):
            raise ValueError("split_batch runs every direction's +/- eps passes in one forward, on LoRA slots of "
                             "their own: it needs trainable='lora' and the paired forward (paired_forward not False)")
        if self.split_batch and self.batch_size is not None and self.n_spsa > self.batch_size:
            raise ValueError(f"split_batch gives each of the n_spsa={self.n_spsa} directions its own examples: "
                             f"batch_size ({self.batch_size}) must be >= n_spsa")

    # ---- resolving the defaults

    def resolve(self, kind: str) -> "MeZOConfig":
        """A copy with every per-kind default filled in for a ``kind`` ("masked"/"causal") model.

        >>> MeZOConfig(trainable="full").resolve("masked").batch_size
        64
        """
        hp = resolve_hyperparameters(kind, self.trainable, **{k: getattr(self, k) for k in DEFAULTS[("causal", "lora")]})
        return dataclasses.replace(self, **hp)

    # ---- records

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` turns back into an equal spec."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MeZOConfig":
        """Build a spec from a mapping (a request body, a record), refusing unknown keys by name."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a run spec must be a JSON object, got {type(values).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown setting {key!r}{hint}; known settings: {', '.join(known)}")
        return cls(**values)

    @classmethod
    def from_record(cls, values: Mapping[str, Any]) -> "MeZOConfig":
        """The spec a run recorded, older records included (see :data:`RECORD_FALLBACKS`)."""
        return cls.from_dict(with_record_fallbacks(values))

    @classmethod
    def load(cls, path: str) -> "MeZOConfig":
        """The spec a finished run recorded: ``path`` is its output folder or its ``summary.json``."""
        if os.path.isdir(path):
            path = os.path.join(path, "summary.json")
        with open(path) as f:
            record = json.load(f)
        if "config" not in record:
            raise ValueError(f"{path} records no run spec ('config'): it was written by an older version")
        return cls.from_record(record["config"])


def with_record_fallbacks(values: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded spec's values, with what older records ran with for the settings they lack."""
    return {**RECORD_FALLBACKS, **values}


def resolve_hyperparameters(kind: str, trainable: Optional[str] = None, **given: Any) -> dict[str, Any]:
    """The run's hyperparameters: what is given, else :data:`DEFAULTS` for (kind, trainable).

    Without ``eval_steps``, evaluations are spaced as in the default schedule (4 per run for
    causal LoRA, 10 for the rest).

    >>> h = resolve_hyperparameters("causal", num_steps=400)
    >>> h["trainable"], h["learning_rate"], h["num_steps"], h["eval_steps"]
    ('lora', 0.001, 400, 100)
    """
    trainable = trainable or DEFAULT_TRAINABLE[kind]
    if (kind, trainable) not in DEFAULTS:
        raise ValueError(f"trainable must be one of {sorted({t for _, t in DEFAULTS})}, got {trainable!r}")
    table = DEFAULTS[(kind, trainable)]
    out = {"trainable": trainable}
    for name, default in table.items():
        out[name] = given.get(name) if given.get(name) is not None else default
    if given.get("eval_steps") is None and given.get("num_steps") is not None:
        fraction = table["eval_steps"] / table["num_steps"]
        out["eval_steps"] = max(1, round(out["num_steps"] * fraction))
    if out["num_steps"] < 0:
        raise ValueError(f"num_steps must be >= 0, got {out['num_steps']}")
    return out


# ---------------------------------------------------------------- checking values


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(MeZOConfig)


def _allowed(hint: Any) -> tuple[list[Any], bool]:
    """(the non-None types of ``hint``, whether None is allowed)."""
    if typing.get_origin(hint) is Union:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _check_type(name: str, value: Any, hint: Any) -> None:
    types, optional = _allowed(hint)
    if value is None:
        if not optional:
            raise ValueError(f"{name} must be set (got None)")
        return
    errors = []
    for kind in types:  # one of them must take the value; the first one's complaint is the message
        try:
            return _check_kind(name, value, kind)
        except ValueError as e:
            errors.append(e)
    raise errors[0]


def _check_kind(name: str, value: Any, kind: Any) -> None:
    origin = typing.get_origin(kind)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"unknown {_CHOICE_NAMES.get(name, name)} {value!r}: choose one of "
                             f"{list(typing.get_args(kind))}")
    elif kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    elif origin is tuple:
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{name} must be a list of names, got {value!r}")
    elif origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, e.g. {{\"0\": \"terrible\", \"1\": \"great\"}}, got {value!r}")


def _check_range(name: str, value: Any, ok, wanted: str) -> None:
    if value is not None and not ok(value):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


# ---------------------------------------------------------------- the CLI, made from the fields


def _cli_flag(f: dataclasses.Field) -> Optional[str]:
    cli = f.metadata.get("cli")
    if cli is False:
        return None
    return "--" + (cli or f.name.replace("_", "-"))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`MeZOConfig` field, grouped as the fields are, with their help."""
    hints, groups = _hints(), {}
    for f in dataclasses.fields(MeZOConfig):
        flag = _cli_flag(f)
        if flag is None:
            continue
        group = groups.get(f.metadata["group"])
        if group is None:
            group = groups[f.metadata["group"]] = parser.add_argument_group(f.metadata["group"])
        types, _ = _allowed(hints[f.name])
        kind = types[0]
        help_text = f.metadata["help"]
        if f.default is not None and f.default is not dataclasses.MISSING and kind is not bool:
            help_text += " (default: %(default)s)"
        if kind is bool and f.default is None:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is bool:
            on, off = flag, "--no-" + flag[2:]
            group.add_argument(off if f.default else on, dest=f.name, action="store_false" if f.default else "store_true",
                               help=("do not: " if f.default else "") + help_text)
        elif typing.get_origin(kind) is Literal:
            group.add_argument(flag, dest=f.name, choices=typing.get_args(kind), default=f.default, help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=f.name, type=lambda s: tuple(p.strip() for p in s.split(",") if p.strip()),
                               default=f.default, help=help_text.replace("%(default)s", ",".join(f.default)))
        elif typing.get_origin(kind) is dict:
            group.add_argument(flag, dest=f.name, type=_label_words_argument, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=f.default, help=help_text)


def _label_words_argument(text: str) -> Union[dict[str, str], str]:
    return AUTO if text.strip().lower() == AUTO else parse_label_words(text)


def config_from_arguments(args: argparse.Namespace, **overrides: Any) -> MeZOConfig:
    """The :class:`MeZOConfig` that :func:`add_config_arguments`' flags describe."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(MeZOConfig) if _cli_flag(f) is not None}
    values.update(overrides)
    return MeZOConfig(**values)


def defaults_table() -> str:
    """The per-kind defaults, one line per (kind, trainable set), for help texts."""
    return "\n".join(
        f"  {kind} LM, {trainable:<4}  lr {v['learning_rate']:<6g} eps {v['epsilon']:<6g} batch {v['batch_size']:<3} "
        f"steps {v['num_steps']:<6} eval every {v['eval_steps']:<5} wd {v['weight_decay']:g}"
        for (kind, trainable), v in DEFAULTS.items())
