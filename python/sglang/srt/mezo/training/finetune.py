"""``mezo_mlm_finetune``: a run in one call, from keyword arguments to its result."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from sglang.srt.mezo.data.prompt import MLMConfig
from sglang.srt.mezo.data.sampling import DataSource
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.plan import prepare, run

DEFAULT_MODEL = MeZOConfig.model_path


#: The task of a run that names neither a task nor an objective.
DEFAULT_TASK = "sst-2"


# ---------------------------------------------------------------- one call
def mezo_mlm_finetune(
    model_path: str = DEFAULT_MODEL,
    task_name: Optional[str] = None,
    train_dataset: DataSource = None,
    eval_dataset: DataSource = None,
    *,
    num_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    epsilon: Optional[float] = None,
    weight_decay: Optional[float] = None,
    k_shot: Optional[int] = None,
    seed: int = MeZOConfig.seed,
    output_dir: Optional[str] = None,
    trainable: Optional[str] = None,
    lora_rank: Optional[int] = None,
    device: Optional[str] = None,
    eval_steps: Optional[int] = None,
    mlm_config: Optional[MLMConfig] = None,
    objective: Optional[str] = None,
    max_eval_examples: Optional[int] = None,
    eval_at_start: bool = True,
    progress_bar: bool = True,
    **config_overrides: Any,
) -> dict:
    """Fine-tune ``model_path`` on a task with MeZO; evaluate; save.

    ``objective`` (default: the task's): ``"ce"`` for one-token label words (the prompt objective),
    ``"options"`` for options scored by log-likelihood (``task_name="arc-easy"``, label words of
    several tokens), ``"completion"`` for generated text: ``task_name="squad"``, or a chat or
    prompt/completion JSONL in OpenAI's format as ``train_dataset`` (task ``chat``); a completion
    run's evaluations report ``eval_loss`` and ``eval_mean_token_accuracy`` on the target tokens,
    and, for rows with reference answers (SQuAD), ``eval_f1`` and ``eval_exact_match`` of the
    answers it generates through SGLang; ``"dpo"`` for preference pairs (OpenAI's dpo rows or
    TRL's prompt/chosen/rejected as ``train_dataset``, task ``preference``; ``beta=`` its
    temperature), with TRL's reward metrics (``eval_rewards/accuracies`` and the rest); or an objective
    of your own: a name :func:`~sglang.srt.mezo.training.objectives.register_objective` registered,
    or ``"module:Class"`` (imported and registered then).

    The arguments are a :class:`~sglang.srt.mezo.run_spec.config.MeZOConfig`'s fields (other fields, e.g.
    ``lora_alpha``, ``n_spsa``, ``lr_schedule``, ``dtype``, pass through ``config_overrides``);
    ``mlm_config`` gives the template and label words (or ``template="auto"``,
    ``label_words="auto"``, ``calibrate=True``: a prompt chosen before training, see
    :mod:`sglang.srt.mezo.training.prompt_search`), and datasets may be lists of :class:`Example`. Arguments left as None take :data:`DEFAULTS` for the model's kind (masked or
    causal LM) and the trainable set ("lora" or "full"; default full for masked LMs, LoRA for
    causal LMs); data defaults are in :func:`~sglang.srt.mezo.data.sampling.prepare_data` (16-shot, seed
    42, the task's dev set). ``num_steps=0`` evaluates zero-shot with the same prompt and writes
    no adapter; ``eval_at_start=False`` skips that step-0 evaluation in a training run
    (``zero_shot_accuracy`` is then None). With ``output_dir`` the adapter
    (``<output_dir>/adapter``, PEFT format), ``metrics.jsonl``, the MeZO trajectory, the run
    state and ``summary.json`` (which records the run spec) are written there; without it
    nothing is written.

    Returns a dict with ``eval_accuracy`` (final), ``best_eval_accuracy``, ``zero_shot_accuracy``
    (step 0), ``eval_history``, ``train_loss`` (one value per step), ``adapter_path``, ``steps``,
    ``wall_time_s`` and what the run used (``hyperparameters``, ``prompt``, ``config``, example
    counts). The adapter is the checkpoint with the lowest validation loss (``returned_step``,
    ``returned_reason``, ``returned_eval``; ``load_best_model_at_end=False``: the last step), and
    ``divergences`` and ``stop_reason`` say what the run noticed and did about it (README,
    "Safeguards").

    Example::

        >>> r = mezo_mlm_finetune(model_path="roberta-large", task_name="sst-2", num_steps=10000,
        ...                       batch_size=64, learning_rate=1e-6, epsilon=1e-3)  # doctest: +SKIP
        >>> r["best_eval_accuracy"]  # doctest: +SKIP
        0.87
        >>> r = mezo_mlm_finetune(objective="completion", train_dataset="chats.jsonl",
        ...                       eval_dataset="chats_valid.jsonl", output_dir="runs/chat")  # doctest: +SKIP
        >>> r["final_eval"]["eval_mean_token_accuracy"]  # doctest: +SKIP
    """
    # Spec fields this function takes under the paper code's names.
    renamed = {"task": "task_name", "train_file": "train_dataset", "eval_file": "eval_dataset"}
    for field_name in set(config_overrides) & set(renamed):
        raise TypeError(f"mezo_mlm_finetune takes {field_name} as {renamed[field_name]}=..., "
                        f"got {field_name}={config_overrides[field_name]!r}")
    known = {f.name for f in dataclasses.fields(MeZOConfig)}
    unknown = set(config_overrides) - known
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    mlm_config = mlm_config or MLMConfig()
    # template="auto" / label_words="auto" (and given ones) may come as keywords, beside mlm_config.
    prompt = {"template": config_overrides.pop("template", mlm_config.template),
              "label_words": config_overrides.pop("label_words", mlm_config.label_word_mapping)}
    files = {name: os.fspath(data) if isinstance(data, (str, os.PathLike)) else None
             for name, data in (("train_file", train_dataset), ("eval_file", eval_dataset))}
    config = MeZOConfig(
        model_path=model_path, task=task_name, **files, k_shot=k_shot, seed=seed, num_steps=num_steps,
        batch_size=batch_size, learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay,
        output_dir=output_dir, trainable=trainable, lora_rank=lora_rank, device=device, eval_steps=eval_steps,
        **prompt, use_space_prefix=mlm_config.use_space_prefix, objective=objective, max_eval_examples=max_eval_examples,
        eval_at_start=eval_at_start, progress_bar=progress_bar, **config_overrides,
    )
    in_memory = {name: data for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset))
                 if data is not None and files[name.replace("dataset", "file")] is None}
    plan = prepare(config, **in_memory)
    return run(plan)
