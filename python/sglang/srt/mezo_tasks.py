"""The seed's path to the task presets, data loading, k-shot sampling and metrics, which live in
:mod:`sglang.srt.mezo.data` (``presets``, ``loaders``, ``sampling``, ``metrics``); this module
re-exports their public names.

>>> from sglang.srt.mezo_tasks import get_task
>>> get_task("SST2").name
'sst-2'
"""

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.loaders import default_data_root, load_examples, resolve_task_data
from sglang.srt.mezo.data.metrics import accuracy, compute_metric, macro_f1
from sglang.srt.mezo.data.presets import (
    TASKS,
    TEMPLATE_CANDIDATES,
    TaskPreset,
    fill_template,
    get_task,
    template_candidates,
)
from sglang.srt.mezo.data.sampling import (
    DEFAULT_DATA_SEED,
    DEFAULT_K_SHOT,
    LM_BFF_SEEDS,
    DataSource,
    DataSplits,
    prepare_data,
    prepare_splits,
    sample_k_shot,
)
from sglang.srt.mezo.errors import DataFormatError

__all__ = [
    "DEFAULT_DATA_SEED", "DEFAULT_K_SHOT", "LM_BFF_SEEDS", "TASKS", "TEMPLATE_CANDIDATES", "DataFormatError",
    "DataSource", "DataSplits", "Example", "TaskPreset", "accuracy", "compute_metric", "default_data_root",
    "fill_template", "get_task", "load_examples", "macro_f1", "prepare_data", "prepare_splits",
    "resolve_task_data", "sample_k_shot", "template_candidates",
]
