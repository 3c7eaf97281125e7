"""k-shot sampling (LM-BFF's seeds and per-class counts) and a run's splits: the k-shot train set, its
k-shot dev split (for choosing prompts and checkpoints) and the evaluation set."""

from __future__ import annotations

import logging
import os
import random
import warnings
from typing import Callable, Hashable, NamedTuple, Sequence, Union

from sglang.srt.mezo.data.chat import ChatExample, CompletionExample, read_completion_file
from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.generative import squad_examples
from sglang.srt.mezo.data.loaders import default_data_root, load_examples, resolve_task_data
from sglang.srt.mezo.data.objective_table import task_rows
from sglang.srt.mezo.data.preference import PreferenceExample, read_preference_file
from sglang.srt.mezo.data.presets import TaskPreset
from sglang.srt.mezo.data.reinforcement import RewardExample, read_reinforcement_file

logger = logging.getLogger(__name__)


LM_BFF_SEEDS = (13, 21, 42, 87, 100)


# ---------------------------------------------------------------- k-shot and metrics
def _label_order(label: Hashable) -> tuple:
    return type(label).__name__, label if isinstance(label, (int, float, str)) else repr(label)


def sample_k_shot(examples: list[Example], k: int, seed: int, *,
                  with_dev: bool = True) -> tuple[list[Example], list[Example]]:
    """LM-BFF k-shot split: k examples per class for train and the next k for dev (disjoint).

    Classes are visited in sorted order and shuffled with ``random.Random(seed)`` from the
    input order, so the same list and seed give the same split. Short classes warn.

    >>> data = [Example(f"s{i}", None, i % 2) for i in range(40)]
    >>> train, dev = sample_k_shot(data, k=4, seed=42)
    >>> len(train), len(dev), sum(e.label for e in train), set(train) & set(dev)
    (8, 8, 4, set())
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    by_label: dict[Hashable, list[Example]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    rng = random.Random(seed)
    train: list[Example] = []
    dev: list[Example] = []
    need = 2 * k if with_dev else k
    for label in sorted(by_label, key=_label_order):
        group = list(by_label[label])
        rng.shuffle(group)
        if len(group) < need:
            warnings.warn(f"class {label!r} has {len(group)} examples, fewer than the {need} requested; "
                          "using what is available")
        train += group[:k]
        dev += group[k:2 * k] if with_dev else []
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


# ---------------------------------------------------------------- the data of one run
DEFAULT_K_SHOT = 16


DEFAULT_DATA_SEED = 42  # one of LM-BFF's five data seeds


#: A dataset as a run takes it: a path or hub name :func:`load_examples` reads, a list of
#: :class:`Example`, or None for the task's own data.
DataSource = Union[str, os.PathLike, Sequence[Example], None]

#: A generative run's dataset: a path, a list of chat or prompt/completion rows, or None.
CompletionSource = Union[str, os.PathLike,
                         Sequence[Union[ChatExample, CompletionExample, PreferenceExample, RewardExample]], None]


def _examples_from(source: DataSource, preset: TaskPreset, split: str) -> list[Example]:
    if source is None:
        source = resolve_task_data(preset, split)
    if isinstance(source, (str, os.PathLike)):
        return load_examples(os.fspath(source), preset, split=split)
    examples = list(source)
    bad = next((e for e in examples if not isinstance(e, Example)), None)
    if bad is not None:
        raise TypeError(f"a dataset must be a path or a list of Example, found a {type(bad).__name__} item")
    return examples


class DataSplits(NamedTuple):
    """A run's examples: ``train``, ``eval`` (what the run reports), and ``dev``: a k-shot split
    disjoint from both, for choices made before training (prompt selection); empty when the
    training data is used whole (``k_shot=0`` or your own file)."""

    train: list[Example]
    eval: list[Example]
    dev: list[Example]


#: A run with no validation data holds out this share of its training rows to watch (at most
#: MAX_HOLDOUT_ROWS of them), when it has MIN_HOLDOUT_SOURCE rows or more.
DEFAULT_HOLDOUT, MAX_HOLDOUT_ROWS, MIN_HOLDOUT_SOURCE = 0.1, 100, 20


def holdout_share(given: float | None, *, train_rows: int, has_eval: bool) -> float:
    """The share of the training rows a run holds out for validation: ``given``, else the default
    rule above (0 for a run with validation data or too few rows).

    >>> holdout_share(None, train_rows=579, has_eval=False)
    0.1
    >>> [holdout_share(None, train_rows=579, has_eval=True), holdout_share(0.0, train_rows=579, has_eval=False),
    ...  holdout_share(None, train_rows=12, has_eval=False)]
    [0.0, 0.0, 0.0]
    """
    if given is not None:
        return given
    return DEFAULT_HOLDOUT if not has_eval and train_rows >= MIN_HOLDOUT_SOURCE else 0.0


def hold_out(rows: list, share: float, seed: int) -> tuple[list, list]:
    """(train, held out): ``share`` of ``rows`` (at least 1, at most MAX_HOLDOUT_ROWS) drawn with
    ``seed``, both in file order.

    >>> hold_out(list(range(30)), 0.1, seed=42)[1]
    [7, 9, 17]
    """
    if share <= 0 or len(rows) < 2:
        return list(rows), []
    n = min(MAX_HOLDOUT_ROWS, max(1, round(share * len(rows))), len(rows) - 1)
    held = set(random.Random(f"holdout:{seed}").sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def prepare_splits(preset: TaskPreset, train_dataset: DataSource = None, eval_dataset: DataSource = None, *,
                   k_shot: int | None = None, seed: int = DEFAULT_DATA_SEED,
                   max_eval_examples: int | None = None) -> DataSplits:
    """(train, eval, dev) examples for a run.

    Train: ``train_dataset`` (a path load_examples reads, a list of Example, or None for the task's
    own training data: the shared data folder if present, else the hub). ``k_shot`` examples per
    class are sampled with ``seed`` (LM-BFF); ``k_shot=None`` means 16 for the task's own training
    data and all of a dataset you give; 0 means all.
    Eval: ``eval_dataset``, else the task's dev set; a task without one (TREC) gets the k-shot dev
    split, drawn from its training data and disjoint from the training examples.
    ``max_eval_examples`` caps the eval set (a seeded sample) for quick runs.
    Dev: LM-BFF's k-shot dev split (k a class, after the training examples); when that split is the
    eval set (TREC), another k a class from the rest, so nothing chosen on dev has seen eval.
    """
    pool = _examples_from(train_dataset, preset, "train")
    k = (DEFAULT_K_SHOT if train_dataset is None else 0) if k_shot is None else k_shot
    if k < 0:
        raise ValueError(f"k_shot must be >= 0, got {k}")
    train, k_dev = sample_k_shot(pool, k, seed) if k else (pool, [])
    dev = k_dev
    if eval_dataset is not None:
        evals = _examples_from(eval_dataset, preset, "dev")
    elif resolve_task_data(preset, "dev") != resolve_task_data(preset, "train"):
        evals = _examples_from(None, preset, "dev")
    else:
        # No dev split (TREC): LM-BFF's k-shot dev, never an example we train on.
        if not k_dev or train_dataset is not None:
            seen = set(train)
            rest = [e for e in _examples_from(None, preset, "train") if e not in seen]
            k_dev = sample_k_shot(rest, k or DEFAULT_K_SHOT, seed, with_dev=False)[0]
        evals = k_dev
        seen = set(train) | set(evals)
        rest = [e for e in pool if e not in seen]
        dev = sample_k_shot(rest, k, seed + 1, with_dev=False)[0] if k and rest else []
        logger.info("task %s has no dev set: evaluating on %d held-out training examples", preset.name, len(evals))
    if not evals:
        logger.warning("no evaluation examples for task %s: accuracy will not be measured", preset.name)
    if max_eval_examples is not None and len(evals) > max_eval_examples:
        keep = sorted(random.Random(seed).sample(range(len(evals)), max_eval_examples))
        evals = [evals[i] for i in keep]
    return DataSplits(train, evals, dev)


def prepare_data(preset: TaskPreset, train_dataset: DataSource = None, eval_dataset: DataSource = None, *,
                 k_shot: int | None = None, seed: int = DEFAULT_DATA_SEED,
                 max_eval_examples: int | None = None) -> tuple[list[Example], list[Example]]:
    """(train, eval) of :func:`prepare_splits`."""
    splits = prepare_splits(preset, train_dataset, eval_dataset, k_shot=k_shot, seed=seed,
                            max_eval_examples=max_eval_examples)
    return splits.train, splits.eval


#: How a file of each generative row kind is read (a task of its own may read its own format: squad).
ROW_READERS: dict[str, Callable[[str], list]] = {
    "completions": read_completion_file, "preferences": read_preference_file, "prompts": read_reinforcement_file,
}
TASK_READERS: dict[str, Callable[[str], list]] = {"squad": squad_examples}


def row_reader(preset: TaskPreset) -> Callable[[str], list]:
    """The reader of a file of ``preset``'s rows (generative row kinds only)."""
    return TASK_READERS.get(preset.name) or ROW_READERS[task_rows(preset.objective)]


def completion_splits(preset: TaskPreset, train_dataset: CompletionSource = None,
                      eval_dataset: CompletionSource = None, *, k_shot: int | None = None,
                      seed: int = DEFAULT_DATA_SEED, max_eval_examples: int | None = None,
                      read_rows: Callable[[str], list] | None = None) -> DataSplits:
    """(train, eval, no dev) of a generative run: chat or prompt/completion rows.

    A path is read by :func:`~sglang.srt.mezo.data.chat.read_completion_file` (OpenAI's chat and
    prompt/completion JSONL), or for task ``squad`` by
    :func:`~sglang.srt.mezo.data.generative.squad_examples`; None is the task's own file (``squad``:
    ../shared/data/squad; ``chat`` has none), or by ``read_rows`` where the run's objective reads its
    own (:class:`~sglang.srt.mezo.data.objective_table.ObjectiveEntry`). ``k_shot``: train on that many rows (a seeded sample;
    None or 0: all); ``max_eval_examples`` caps the eval rows likewise.
    """

    def read(source: CompletionSource, split: str) -> list:
        if source is None:
            if split not in preset.local_files and not (split == "dev" and preset.local_files):
                return []
            source = resolve_task_data(preset, split)
            if source.startswith("hub:"):
                raise FileNotFoundError(f"task {preset.name!r}: its {split} file {preset.local_files.get(split)!r} is "
                                        f"not under the data folder ({default_data_root()}); set SGLANG_MEZO_DATA_DIR "
                                        "or give the file")
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            return (read_rows or row_reader(preset))(path)
        return list(source)

    def sample(rows: list, n: int | None) -> list:
        if not n or len(rows) <= n:
            return rows
        return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), n))]

    if preset.name == "chat" and train_dataset is None:
        raise ValueError("task 'chat' has no data of its own: give train_file (a JSONL of OpenAI chat rows "
                         '{"messages": [...]} or {"prompt": ..., "completion": ...} rows)')
    if preset.name == "preference" and train_dataset is None:
        raise ValueError("task 'preference' has no data of its own: give train_file (a JSONL of preference pairs: "
                         'OpenAI\'s {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": '
                         '[...]} or TRL\'s {"prompt": ..., "chosen": ..., "rejected": ...})')
    if preset.name == "reinforcement" and train_dataset is None:
        raise ValueError("task 'reinforcement' has no data of its own: give train_file (a JSONL of OpenAI reinforcement "
                         'rows: {"messages": [..., {"role": "user", "content": ...}], <fields the grader reads>})')
    train = sample(read(train_dataset, "train"), k_shot)
    evals = sample(read(eval_dataset, "dev"), max_eval_examples)
    return DataSplits(train, evals, [])
