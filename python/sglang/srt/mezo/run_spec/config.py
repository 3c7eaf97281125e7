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

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

from sglang.srt.mezo.data.graders import parse_grader
from sglang.srt.mezo.data.graders.files import read_grader_file
from sglang.srt.mezo.data.objective_table import ROW_KINDS, objective_entry, objectives_for_rows, task_rows
from sglang.srt.mezo.data.presets import get_task
from sglang.srt.mezo.data.prompt import check_label_words, check_template, parse_label_words
from sglang.srt.mezo.run_spec.defaults import (
    AUTO,
    DEFAULTS,
    ENCODER_TARGETS,
    PER_KIND,
    SUPPORTED_TARGETS,
    resolve_hyperparameters,
    with_record_fallbacks,
)

Trainable = Literal["lora", "full"]


#: The built-in objectives' names; a run may also name one a user registered
#: (:func:`sglang.srt.mezo.data.objective_table.objective_names` lists them all).
ObjectiveName = Literal["ce", "accuracy", "completion", "options", "dpo", "reward"]


OptionScore = Literal["mean", "sum"]


Schedule = Literal["constant", "linear"]


DivergenceRule = Literal["shrink", "stop", "warn"]  # training/divergence.py


Noise = Literal["gaussian", "rademacher"]  # sglang.srt.mezo.zo.noise.NoiseKind


UpdateRuleName = Literal["sgd", "sign", "normalized", "adam"]

#: How a reward step's rewards become projected gradients.
RewardShaping = Literal["difference", "z-score"]


#: How a step measures its directions (training/estimators): "spsa", the settings below choose
#: (paired, split batch, population); "fzoo", N one-sided probes and the loss at theta in one forward;
#: "hizoo", two-sided probes preconditioned by a diagonal Hessian estimate, and the loss at theta.
EstimatorName = Literal["spsa", "fzoo", "hizoo"]

#: HiZOO's smoothing constant when a run leaves it unset: the reference code's README example
#: (``HESSIAN_SMOOTH_TYPE=constant1e-8``; its HiZOO.sh defaults to 0, which never moves the Hessian).
HIZOO_SMOOTHING = 1e-8


#: Where else a run may log its metrics (``report_to``).
REPORT_TO = ("tensorboard",)

DType = Literal["auto", "float32", "float16", "bfloat16"]


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
    task: Optional[str] = _spec(None, "task preset: sst-2, sst-5, trec, mnli, snli, rte, cb, boolq (label words); "
                                "arc-easy (multiple choice); squad (generated answers); chat (a chat or "
                                "prompt/completion --train-file); preference (a file of preference pairs, objective dpo) "
                                "reinforcement (prompts and the fields a grader reads, objective reward) "
                                "(default: chat for objective completion, preference for dpo, reinforcement for "
                                "reward, else sst-2)",
                                group="model and data")
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
    objective: Optional[str] = _spec(
        None, "ce: cross-entropy over one-token label words; accuracy: minus accuracy (non-differentiable); "
        "options: cross-entropy over each option's log-likelihood (label words of several tokens, a row's "
        "'choices'); completion: cross-entropy of a completion's or the assistant messages' tokens; "
        "dpo: DPO's loss on preference pairs; reward: minus the mean grade of generated answers "
        "(default: the task's: ce, options for arc-easy, completion for squad and chat); or one registered from "
        "your own code (register_objective), or 'module:Class'", group="prompt")
    option_score: OptionScore = _spec("mean", "options: an option's score is the mean (or the sum) of its tokens' "
                                      "log-probabilities", group="prompt")
    max_new_tokens: int = _spec(50, "completion: the longest answer an evaluation generates, in tokens (it also "
                                "stops at a line break or the end of the turn)", group="prompt")
    beta: float = _spec(0.1, "dpo: the temperature of DPO's loss (TRL's and OpenAI's default 0.1; higher keeps the "
                        "model closer to the reference)", group="prompt")
    grader: Union[dict, str, None] = _spec(
        None, "reward: the grader of each generated answer, an OpenAI grader object (string_check, text_similarity, "
        "multi) or the path of a JSON file holding one (default for task squad: SQuAD token F1 against the "
        "accepted answers)", group="prompt")
    temperature: float = _spec(0.0, "reward: the sampling temperature of the answers a training step grades (0: "
                               "greedy; above 0, an answer under +eps and under -eps draws with the same seed); "
                               "evaluation is greedy", group="prompt")

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
    reward_shaping: RewardShaping = _spec(
        "difference", "reward: how a step's rewards become projected gradients: difference, g = (R- - R+) / (2 eps) "
        "per direction, on the loss -R (MeZO's); z-score, the population form of ES at scale (arXiv 2509.24372): "
        "every one of the n_spsa directions answers the whole batch, all in one generation, the step's 2 * n_spsa "
        "mean rewards are z-scored and g_k = (Z-_k - Z+_k) / 2, so each step moves by about lr whatever the rewards' "
        "scale (a population of n_spsa mirrored pairs; needs n_spsa >= 2 and 2 * n_spsa + 1 LoRA slots)",
        group="hyperparameters")
    estimator: EstimatorName = _spec(
        "spsa", "how a step measures its n_spsa directions: spsa, MeZO's two-sided (L+ - L-) / (2 eps) per direction "
        "(paired_forward, split_batch and reward_shaping choose how the forwards run); fzoo (arXiv 2506.09034), "
        "one-sided probes: every direction's theta + eps z_k and theta itself run the whole batch in one forward "
        "over n_spsa + 1 LoRA slots, and theta -= lr / (n_spsa * sigma) * sum_k (L_k - L_0) z_k, sigma the standard "
        "deviation of the n_spsa losses L_k (so eps does not scale the step; needs LoRA, n_spsa >= 2 and "
        "update_rule sgd, which it implies); hizoo (arXiv 2402.15173), curvature-aware: theta +/- eps z_k / sqrt(H) "
        "and theta itself run the whole batch in one forward over 2 * n_spsa + 1 LoRA slots, H (a diagonal Hessian "
        "estimate, one float64 a parameter, from 1) moves by hessian_smoothing towards |L+ + L- - 2 L0| / (2 eps^2) "
        "* H z^2, and theta -= lr * g * z / sqrt(H) (needs LoRA and Gaussian noise; any update_rule but adam)",
        group="hyperparameters")
    hessian_smoothing: Optional[float] = _spec(
        None, "hizoo: alpha of the moving average of the Hessian estimate H, in [0, 1) (0: H stays 1, MeZO with "
        f"one forward more; default {HIZOO_SMOOTHING}, the reference code's example)", group="hyperparameters")
    lr_schedule: Optional[Schedule] = _spec(None, "learning-rate schedule: constant, or linear decay to 0 at the "
                                            f"last step (default: {PER_KIND})", group="hyperparameters")
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
    report_to: tuple[str, ...] = _spec((), "where else the run logs its metrics, as HF's Trainer names it: "
                                       "tensorboard (event files in <output_dir>/tensorboard) or none",
                                       group="evaluation and output")
    load_best_model_at_end: bool = _spec(
        True, "return the checkpoint with the best validation loss (HF's name), not the last one: the adapter at "
        "the top of output_dir, the result's adapter_path and a server job's fine-tuned model are that step's "
        "(a run without validation data returns its last step)", group="safeguards")
    on_divergence: DivergenceRule = _spec(
        "shrink", "what a run does when its smoothed train loss or its validation loss rises above its best by "
        "more than divergence_tolerance: shrink, halve the learning rate of the steps that follow (three times at "
        "most, then stop); stop, end the run there (it evaluates and saves first); warn, only say so",
        group="safeguards")
    divergence_window: Optional[int] = _spec(
        None, "steps whose train losses are averaged to watch for a divergence (default: a tenth of the run, "
        "10-100)", group="safeguards")
    divergence_tolerance: float = _spec(
        0.2, "how far (relative) the smoothed train loss or the validation loss may rise above its best before "
        "the run calls it a divergence (and at least 0.05 in the loss's own units)", group="safeguards")
    validation_holdout: Optional[float] = _spec(
        None, "a run with no validation data holds out this share of its training rows to watch and to choose "
        "the returned checkpoint (default: 0.1, at most 100 rows, for runs of 20 rows or more; 0: train on all "
        "rows, with nothing to watch)", group="safeguards")
    resume: bool = _spec(False, "continue the run in output_dir from its latest checkpoint (exactly: the same "
                         "batches, step seeds and learning rates as a run that was never stopped)",
                         group="evaluation and output")

    # ---- runtime
    device: Optional[str] = _spec(None, "cpu, cuda or cuda:N (default: cuda if available, else cpu)", group="runtime")
    dtype: Optional[DType] = _spec(None, "weights and activations dtype (default for causal-LM LoRA: auto, "
                                   "bfloat16 where the device computes it natively (a CPU with AMX or "
                                   "avx512_bf16, a CUDA GPU with bf16), else float32; float32 otherwise)",
                                   group="runtime")
    max_total_tokens: int = _spec(8192, "KV-cache size of a runner built for the run (tokens)", group="runtime")
    exact_restore: bool = _spec(True, "restore weights after a perturbation from a copy (bitwise exact); off: "
                                "add/subtract, inexact in low precision but no copy of the trainable weights",
                                group="runtime")
    paired_forward: Optional[bool] = _spec(None, "LoRA: run the +eps and -eps passes as one batch over two adapter "
                                           "slots (default: whenever the runner has a free slot)", group="runtime")
    progress_bar: bool = _spec(True, "show progress bars", cli=False, group="runtime")

    def __post_init__(self) -> None:
        hints = field_hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("lora_target_modules", "report_to") and isinstance(value, (list, str)):
                value = tuple(value.split(",") if isinstance(value, str) else value)
                # Items that are not text are left for _check_type to name, not stripped.
                setattr(self, f.name, tuple(v.strip() if isinstance(v, str) else v for v in value))
            elif f.name == "label_words" and isinstance(value, str):
                setattr(self, f.name, AUTO if value.strip().lower() == AUTO else parse_label_words(value))
            elif f.name == "label_words" and isinstance(value, Mapping):
                setattr(self, f.name, {str(k) if not isinstance(k, bool) else str(k).lower(): w
                                       for k, w in value.items()})
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        self._resolve_task_and_objective()
        if not self.model_path.strip():
            raise ValueError("model_path is empty: give a checkpoint folder, a hub id or 'smollm2-135m'")
        _check_range("learning_rate", self.learning_rate, lambda v: v >= 0, ">= 0")
        _check_range("epsilon", self.epsilon, lambda v: v > 0, "a positive number")
        _check_range("weight_decay", self.weight_decay, lambda v: v >= 0, ">= 0")
        _check_range("lora_alpha", self.lora_alpha, lambda v: v > 0, "> 0")
        _check_range("beta", self.beta, lambda v: v > 0, "> 0")
        _check_range("temperature", self.temperature, lambda v: v >= 0, ">= 0 (0: greedy)")
        self._check_grader()
        _check_range("divergence_tolerance", self.divergence_tolerance, lambda v: v > 0, "> 0")
        _check_range("validation_holdout", self.validation_holdout, lambda v: 0 <= v < 1, "in [0, 1)")
        for name, low in (("divergence_window", 1), ("max_new_tokens", 1), ("num_steps", 0), ("eval_steps", 0), ("k_shot", 0), ("batch_size", 1), ("n_spsa", 1),
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
        self.report_to = tuple(r for r in self.report_to if r and r != "none")
        if set(self.report_to) - set(REPORT_TO):
            raise ValueError(f"report_to {list(self.report_to)}: choose among {list(REPORT_TO)} (or none)")
        if self.report_to and not self.output_dir:
            raise ValueError(f"report_to={list(self.report_to)} writes into the run's folder: give an output_dir")
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
        if (self.split_batch or self.reward_shaping == "z-score") and (self.trainable == "full"
                                                                       or self.paired_forward is False):
            mode = "split_batch" if self.split_batch else "reward_shaping='z-score'"
            raise ValueError(f"{mode} runs every direction's +/- eps passes in one forward, on LoRA slots of "
                             "their own: it needs trainable='lora' and the paired forward (paired_forward not False)")
        if self.reward_shaping == "z-score":
            self._check_population()
        if self.estimator == "fzoo":
            self._check_fzoo()
        if self.estimator == "hizoo":
            self._check_hizoo()
        elif self.hessian_smoothing is not None:
            raise ValueError(f"hessian_smoothing is HiZOO's (the moving average of its Hessian estimate): it needs "
                             f"estimator='hizoo', not {self.estimator!r}; leave it unset or set estimator='hizoo'")
        if self.split_batch and self.batch_size is not None and self.n_spsa > self.batch_size:
            raise ValueError(f"split_batch gives each of the n_spsa={self.n_spsa} directions its own examples: "
                             f"batch_size ({self.batch_size}) must be >= n_spsa")

    def _resolve_task_and_objective(self) -> None:
        """Fill in whichever of task and objective is not given from the other, and check that they fit
        (:mod:`sglang.srt.mezo.data.objective_table`: a task's rows are of one kind, an objective trains
        on the kinds it lists)."""
        if self.objective is None:
            self.objective = get_task(self.task).objective if self.task is not None else "ce"
        entry = objective_entry(self.objective)
        if self.task is None:
            self.task = entry.default_task
        preset = get_task(self.task)
        self.task = preset.name
        rows = task_rows(preset.objective)
        if rows not in entry.rows:
            fits = [e.name for e in objectives_for_rows(rows)]
            raise ValueError(f"task {preset.name!r} trains with objective {' or '.join(map(repr, fits))}, not "
                             f"{self.objective!r}: {ROW_KINDS[rows].description}")

    def _check_population(self) -> None:
        """reward_shaping='z-score': what ES's population form needs, said before anything loads."""
        if objective_entry(self.objective).rows[0] != "prompts":
            raise ValueError(f"reward_shaping='z-score' z-scores a step's rewards: it needs objective 'reward', "
                             f"not {self.objective!r}")
        if self.n_spsa < 2:
            raise ValueError("reward_shaping='z-score' z-scores the rewards of a population of n_spsa mirrored pairs: "
                             f"n_spsa={self.n_spsa} is one pair, whose two z-scores are +1 and -1 whatever the rewards "
                             "(a sign step); give n_spsa >= 2 (ES at scale used a population of 30)")
        if self.split_batch:
            raise ValueError("reward_shaping='z-score' has every direction answer the whole batch, and split_batch "
                             "gives each its own part (z-scores across parts would compare prompts, not "
                             "perturbations): turn split_batch off")

    def _check_fzoo(self) -> None:
        """estimator='fzoo': what FZOO's one-sided probes need, said before anything loads; an update
        rule left unset becomes sgd (the step is scaled by the losses' spread already)."""
        if self.trainable == "full" or self.paired_forward is False:
            # Checked again after resolve(): a masked LM's default trainable set is every weight.
            raise ValueError("estimator='fzoo' runs theta and its n_spsa probes in one forward, each on a LoRA slot of "
                             "its own: it needs trainable='lora' and LoRA slots (paired_forward not False)")
        if self.split_batch or self.reward_shaping == "z-score":
            mode = "split_batch" if self.split_batch else "reward_shaping='z-score'"
            raise ValueError(f"estimator='fzoo' runs every probe on the whole batch and scales the step by the "
                             f"probes' losses itself; {mode} is another estimator: turn it off or use estimator='spsa'")
        if self.n_spsa < 2:
            raise ValueError(f"estimator='fzoo' divides the step by the standard deviation of the n_spsa probes' "
                             f"losses: n_spsa={self.n_spsa} has none; give n_spsa >= 2 (the paper measures a batch "
                             "of probes a step)")
        if self.update_rule is None:
            self.update_rule = "sgd"
        elif self.update_rule != "sgd":
            raise ValueError(f"estimator='fzoo' already normalises its step (by the standard deviation of the probes' "
                             f"losses, the paper's normalized-SGD form); update_rule={self.update_rule!r} would rescale "
                             "it again: leave update_rule unset or set it to 'sgd'")

    def _check_hizoo(self) -> None:
        """estimator='hizoo': what HiZOO's preconditioned probes need, said before anything loads;
        hessian_smoothing left unset becomes :data:`HIZOO_SMOOTHING`."""
        if self.trainable == "full" or self.paired_forward is False:
            # Checked again after resolve(): a masked LM's default trainable set is every weight.
            raise ValueError("estimator='hizoo' keeps a Hessian estimate the size of the trainable tensors (float64) "
                             "and runs theta and its +/- probes in one forward on LoRA slots of their own: it needs "
                             "trainable='lora' and LoRA slots (paired_forward not False)")
        if self.split_batch or self.reward_shaping == "z-score":
            mode = "split_batch" if self.split_batch else "reward_shaping='z-score'"
            raise ValueError(f"estimator='hizoo' runs every direction and theta itself on the whole batch (its "
                             f"curvature term L+ + L- - 2 L0 compares them); {mode} is another estimator: turn it "
                             "off or use estimator='spsa'")
        if self.noise == "rademacher":
            raise ValueError("estimator='hizoo' estimates the Hessian diagonal from z^2, and random signs have "
                             "z^2 = 1 everywhere (every parameter would get the same curvature): use "
                             "noise='gaussian' (the LoRA default) or leave noise unset")
        if self.update_rule == "adam":
            raise ValueError("estimator='hizoo' preconditions its step by its own diagonal Hessian estimate, and "
                             "update_rule='adam' would precondition it again by Adam's second moment: leave "
                             "update_rule unset, or choose sgd (the paper's step), normalized or sign")
        if self.hessian_smoothing is None:
            self.hessian_smoothing = HIZOO_SMOOTHING
        _check_range("hessian_smoothing", self.hessian_smoothing, lambda v: 0 <= v < 1,
                     "in [0, 1) (1 would forget H each step and can make it 0)")

    @property
    def directions_per_forward(self) -> int:
        """How many directions' +/- eps adapters one forward (or generation) of a step holds: each
        needs two LoRA slots of its own."""
        return self.n_spsa if self.split_batch or self.reward_shaping == "z-score" else 1

    @property
    def slot_pairs_per_forward(self) -> int:
        """How many pairs of LoRA slots one forward of a step holds: two slots per direction
        (:attr:`directions_per_forward`), FZOO's n_spsa + 1 (theta and each probe) or HiZOO's
        2 * n_spsa + 1 (theta and each direction's two) rounded up to pairs, which is how the
        trainable set allocates them.

        >>> MeZOConfig(n_spsa=4).slot_pairs_per_forward, MeZOConfig(n_spsa=4, estimator="fzoo").slot_pairs_per_forward
        (1, 3)
        >>> MeZOConfig(estimator="hizoo").slot_pairs_per_forward
        2
        """
        if self.estimator == "fzoo":
            return (self.n_spsa + 2) // 2
        if self.estimator == "hizoo":
            return self.n_spsa + 1
        return self.directions_per_forward

    def _check_grader(self) -> None:
        """A reward run's grader, read (from its file) and checked before anything loads."""
        if objective_entry(self.objective).rows[0] != "prompts":
            if self.grader is not None:
                raise ValueError(f"grader scores generated answers: it needs objective 'reward', not {self.objective!r}")
            return
        if self.grader is None and self.objective == "reward":
            if self.task != "squad":
                raise ValueError(f"objective 'reward' on task {self.task!r} needs a grader: an OpenAI grader object "
                                 "or a JSON file of one, e.g. {\"type\": \"string_check\", \"name\": \"exact\", "
                                 "\"input\": \"{{sample.output_text}}\", \"reference\": \"{{item.answer}}\", "
                                 "\"operation\": \"eq\"}")
            return
        if isinstance(self.grader, str):
            self.grader = read_grader_file(self.grader)
        if self.grader is not None:
            parse_grader(self.grader)

    # ---- resolving the defaults

    def resolve(self, kind: str) -> "MeZOConfig":
        """A copy with every per-kind default filled in for a ``kind`` ("masked"/"causal") model.

        >>> MeZOConfig(trainable="full").resolve("masked").batch_size
        64
        """
        hp = resolve_hyperparameters(kind, self.trainable, self.objective,
                                     **{k: getattr(self, k) for k in DEFAULTS[("causal", "lora")]})
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


# ---------------------------------------------------------------- checking values
def field_hints() -> dict[str, Any]:
    """The run spec's fields and their type hints (resolved: the module has postponed annotations)."""
    return typing.get_type_hints(MeZOConfig)


def allowed_types(hint: Any) -> tuple[list[Any], bool]:
    """(the non-None types of ``hint``, whether None is allowed)."""
    if typing.get_origin(hint) is Union:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _check_type(name: str, value: Any, hint: Any) -> None:
    types, optional = allowed_types(hint)
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
