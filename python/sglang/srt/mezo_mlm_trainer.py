"""The seed's entry point: prompt-based MeZO fine-tuning in one call, and its CLI.

``mezo_mlm_finetune(...)`` resolves a run spec, loads and encodes the data, trains MeZO on SGLang's
forward path and saves the adapter; ``python -m sglang.srt.mezo_mlm_trainer --help`` is its CLI. The
code lives in :mod:`sglang.srt.mezo` (``training/plan.py`` reads top to bottom: spec, data,
objective, run); this module re-exports its public names.

Example (SmolLM2-135M, 16-shot SST-2, the calibrated LoRA defaults)::

    >>> from sglang.srt.mezo_mlm_trainer import MLMConfig, mezo_mlm_finetune
    >>> result = mezo_mlm_finetune(model_path="smollm2-135m", task_name="sst-2",
    ...                            num_steps=1000, output_dir="runs/sst2")  # doctest: +SKIP
    >>> result["zero_shot_accuracy"], result["eval_accuracy"]  # doctest: +SKIP
    (0.52, 0.76)
    >>> MLMConfig(template="It was [MASK].", label_word_mapping={0: "terrible", 1: "great"})
    MLMConfig(template='It was [MASK].', label_word_mapping={0: 'terrible', 1: 'great'}, use_space_prefix=True)
"""

from __future__ import annotations

if __name__ == "__main__":  # the CLI parses its arguments before SGLang is imported
    import sys

    from sglang.srt.mezo.cli.train import main

    sys.exit(main())

from sglang.srt.mezo.cli.train import build_parser, format_summary, main
from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.metrics import compute_metric
from sglang.srt.mezo.data.presets import TaskPreset, get_task
from sglang.srt.mezo.data.prompt import (
    MASK,
    MODEL_KINDS,
    EncodedExample,
    MLMConfig,
    PromptEncoder,
    check_template,
    label_token_ids,
    match_label_words,
    parse_label_words,
)
from sglang.srt.mezo.data.sampling import DataSource, DataSplits, prepare_data, prepare_splits
from sglang.srt.mezo.engine.models import check_model_path, check_trainable, model_architectures, model_kind
from sglang.srt.mezo.errors import DataFormatError
from sglang.srt.mezo.run_spec.config import MeZOConfig, ObjectiveName
from sglang.srt.mezo.run_spec.defaults import AUTO, DEFAULTS, resolve_hyperparameters
from sglang.srt.mezo.training.finetune import DEFAULT_MODEL, DEFAULT_TASK, mezo_mlm_finetune
from sglang.srt.mezo.training.objectives.base import ForwardInputs
from sglang.srt.mezo.training.plan import PROMPT_FILE, RunPlan, complete, prepare, run, start_run
from sglang.srt.mezo.training.prompt_search import PromptChoice, search_prompt
from sglang.srt.mezo.training.prompt_trainer import OBJECTIVES, MeZOMLMTrainer
from sglang.srt.mezo.training.trainer import MeZOTrainer

#: The seed exported the spec's objective names as ``Objective``; the package calls them
#: ``ObjectiveName`` (its ``Objective`` is the objective interface).
Objective = ObjectiveName

__all__ = [
    "AUTO", "DEFAULTS", "DEFAULT_MODEL", "DEFAULT_TASK", "MASK", "MODEL_KINDS", "OBJECTIVES", "PROMPT_FILE",
    "DataFormatError", "DataSource", "DataSplits", "EncodedExample", "Example", "ForwardInputs", "MLMConfig",
    "MeZOConfig", "MeZOMLMTrainer", "MeZOTrainer", "Objective", "ObjectiveName", "PromptChoice", "PromptEncoder", "RunPlan",
    "TaskPreset", "build_parser", "check_model_path", "check_template", "check_trainable", "complete",
    "compute_metric", "format_summary", "get_task", "label_token_ids", "main", "match_label_words",
    "mezo_mlm_finetune", "model_architectures", "model_kind", "parse_label_words", "prepare", "prepare_data",
    "prepare_splits", "resolve_hyperparameters", "run", "search_prompt", "start_run",
]
