"""Task presets, data loading, k-shot sampling and metrics for MeZO prompt fine-tuning.

MeZO only works with a prompt objective: each task needs a template with a
``[MASK]`` slot and one label word per class (Malladi et al. 2023, on top of
LM-BFF, Gao et al. 2021). This module holds those presets and turns the usual
task files (GLUE TSV, ``LABEL SENTENCE`` text, SuperGLUE JSONL, CSV, JSON, or a
Hugging Face dataset) into :class:`Example` rows with normalized labels.

It imports neither torch nor sglang, so data handling stays usable and testable
without the engine; ``datasets`` is imported only when a hub/disk dataset is asked for.

>>> task = get_task("SST2")
>>> ex = Example("a gorgeous film .", None, 1)
>>> fill_template(task.mlm_template, ex)
'a gorgeous film . It was [MASK] .'
>>> task.mlm_label_words[ex.label]
'great'
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, NamedTuple, Sequence, Union

LM_BFF_SEEDS = (13, 21, 42, 87, 100)

logger = logging.getLogger(__name__)


class DataFormatError(ValueError):
    """Data could not be turned into examples; the message names file, 1-based line and a fix."""


@dataclass(frozen=True)
class Example:
    """One labelled input; ``text_b`` is None for single-sentence tasks.

    >>> Example("the plot is thin .", None, 0).label
    0
    """

    text_a: str
    text_b: str | None
    label: Hashable


@dataclass(frozen=True)
class TaskPreset:
    """Prompt (template + label words), data sources and metric of one task.

    Templates use ``<S1>``/``<S2>`` for the texts and ``[MASK]`` for the label word;
    label words carry no leading space (tokenizer-specific, added by the caller).
    ``local_files`` maps "train"/"dev" to paths under a data root; a task without
    a "dev" file (TREC) expects the caller to carve a disjoint dev set out of train.

    >>> get_task("rte").causal_label_words["entailment"]
    'Yes'
    """

    name: str
    labels: tuple
    mlm_template: str | None
    # Dict fields are excluded from hashing so presets can still be dict keys.
    mlm_label_words: dict | None = field(hash=False)
    causal_template: str | None
    causal_label_words: dict | None = field(hash=False)
    max_length: int
    metric: str
    strip_s1_punctuation: bool
    text_fields: tuple[str, ...]
    hub_name: tuple[str, ...]
    local_files: dict[str, str] = field(hash=False)


_NLI_MLM = "<S1> ? [MASK] , <S2>"
_NLI_WORDS = {"contradiction": "No", "entailment": "Yes", "neutral": "Maybe"}
_SST2_WORDS = {0: "terrible", 1: "great"}
_SST5_WORDS = {0: "terrible", 1: "bad", 2: "okay", 3: "good", 4: "great"}
# Numeric order of the LM-BFF/sent-conv files: 0 DESC, 1 ENTY, 2 ABBR (Expression), 3 HUM, 4 LOC, 5 NUM.
_TREC_WORDS = {0: "Description", 1: "Entity", 2: "Expression", 3: "Human", 4: "Location", 5: "Number"}
_RTE_CAUSAL = '<S1>\nDoes this mean that "<S2>" is true? Yes or No?\n[MASK]'
_CB_CAUSAL = 'Suppose <S1> Can we infer that "<S2>"? Yes, No, or Maybe?\n[MASK]'


def _nli(name: str, hub: tuple[str, ...]) -> TaskPreset:
    # The paper has no OPT prompt for MNLI/SNLI, so no causal template is guessed here.
    return TaskPreset(name, ("contradiction", "entailment", "neutral"), _NLI_MLM, dict(_NLI_WORDS),
                      None, None, 256, "accuracy", True, ("premise", "hypothesis"), hub, {})


TASKS: dict[str, TaskPreset] = {p.name: p for p in (
    TaskPreset("sst-2", (0, 1), "<S1> It was [MASK] .", dict(_SST2_WORDS), "<S1> It was [MASK]",
               dict(_SST2_WORDS), 128, "accuracy", False, ("sentence",), ("glue", "sst2"),
               {"train": "sst2/train.tsv", "dev": "sst2/dev.tsv"}),
    # Causal templates for SST-5 and TREC are our own choice (the paper runs them on RoBERTa only).
    TaskPreset("sst-5", (0, 1, 2, 3, 4), "<S1> It was [MASK] .", dict(_SST5_WORDS), "<S1> It was [MASK]",
               dict(_SST5_WORDS), 128, "accuracy", False, ("text",), ("SetFit/sst5",),
               {"train": "sst5/train.txt", "dev": "sst5/dev.txt"}),
    # No dev file: resolve_task_data("trec", "dev") returns the train file; sample a disjoint dev from it.
    TaskPreset("trec", (0, 1, 2, 3, 4, 5), "[MASK] : <S1>", dict(_TREC_WORDS), "<S1> Answer type: [MASK]",
               dict(_TREC_WORDS), 128, "accuracy", False, ("text",), ("CogComp/trec",),
               {"train": "trec/train.txt"}),
    _nli("mnli", ("glue", "mnli")),
    _nli("snli", ("snli",)),
    TaskPreset("rte", ("entailment", "not_entailment"), _NLI_MLM, {"entailment": "Yes", "not_entailment": "No"},
               _RTE_CAUSAL, {"entailment": "Yes", "not_entailment": "No"}, 256, "accuracy", True,
               ("premise", "hypothesis"), ("super_glue", "rte"), {"train": "rte/train.jsonl", "dev": "rte/val.jsonl"}),
    # CB is not in the RoBERTa table: reuse RTE's masked-LM prompt and max length.
    TaskPreset("cb", ("entailment", "contradiction", "neutral"), _NLI_MLM, dict(_NLI_WORDS), _CB_CAUSAL,
               dict(_NLI_WORDS), 256, "macro_f1", True, ("premise", "hypothesis"), ("super_glue", "cb"),
               {"train": "cb/train.jsonl", "dev": "cb/val.jsonl"}),
    TaskPreset("boolq", (True, False), None, None, "<S1> <S2>?\n[MASK]", {True: "Yes", False: "No"}, 256,
               "accuracy", False, ("passage", "question"), ("super_glue", "boolq"),
               {"train": "boolq/train32.jsonl", "dev": "boolq/val.jsonl"}),
)}

# Templates that ``template="auto"`` scores on the k-shot dev split, after the preset's own (which
# comes first and wins ties). Masked LMs: LM-BFF's automatically generated templates (Gao et al.
# 2021, Table 3) beside the manual ones; causal LMs: our own plain-language variants, each ending at
# the [MASK] so that the label word is the next token.
_SENTIMENT_CAUSAL = ("<S1> All in all, it was [MASK]", "Review: <S1>\nSentiment: [MASK]",
                     "<S1> The movie was [MASK]", "<S1> In short, it is [MASK]")
_NLI_CAUSAL = ("<S1>\nQuestion: <S2> True or False?\nAnswer: [MASK]",
               "Premise: <S1>\nHypothesis: <S2>\nDoes the premise entail the hypothesis? [MASK]",
               '<S1> Based on that, is it true that "<S2>"? [MASK]')
TEMPLATE_CANDIDATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("sst-2", "masked"): ("<S1> A [MASK] one .", "<S1> A [MASK] piece .", "<S1> All in all [MASK] ."),
    ("sst-5", "masked"): ("<S1> The movie is [MASK] .", "<S1> The music is [MASK] .", "<S1> But it is [MASK] ."),
    ("trec", "masked"): ("[MASK] question : <S1>", "<S1> This question is about [MASK] ."),
    ("rte", "masked"): ("<S1> . [MASK] , I believe <S2>", "<S1> . [MASK] , I think that <S2>"),
    ("cb", "masked"): ("<S1> . [MASK] , I believe <S2>", "<S1> . [MASK] , I think that <S2>"),
    ("sst-2", "causal"): _SENTIMENT_CAUSAL,
    ("sst-5", "causal"): _SENTIMENT_CAUSAL,
    ("trec", "causal"): ("Question: <S1>\nAnswer type: [MASK]", "<S1> The answer is a [MASK]",
                         "<S1> This question asks about [MASK]"),
    ("rte", "causal"): _NLI_CAUSAL,
    ("cb", "causal"): _NLI_CAUSAL,
    ("boolq", "causal"): ("<S1>\nQuestion: <S2>?\nAnswer: [MASK]", "Passage: <S1>\nQuestion: <S2>? Yes or no?\n[MASK]"),
}


def template_candidates(preset: TaskPreset, kind: str) -> list[str]:
    """The templates ``template="auto"`` chooses among for ``kind`` ("masked"/"causal"): the
    preset's first, then :data:`TEMPLATE_CANDIDATES`.

    >>> template_candidates(get_task("sst-2"), "causal")[:2]
    ['<S1> It was [MASK]', '<S1> All in all, it was [MASK]']
    """
    own = preset.mlm_template if kind == "masked" else preset.causal_template
    return list(dict.fromkeys(([own] if own else []) + list(TEMPLATE_CANDIDATES.get((preset.name, kind), ()))))


# Integer codes of GLUE/SuperGLUE/SNLI releases (and the hub) for string- or bool-keyed tasks.
_INT_CODES: dict[str, tuple] = {
    "mnli": ("entailment", "neutral", "contradiction"), "snli": ("entailment", "neutral", "contradiction"),
    "rte": ("entailment", "not_entailment"), "cb": ("entailment", "contradiction", "neutral"),
    "boolq": (False, True),
}
# The hub's TREC column "coarse_label" orders ABBR, ENTY, DESC, HUM, LOC, NUM, unlike the files above.
_COLUMN_REMAP = {("trec", "coarse_label"): (2, 1, 0, 3, 4, 5)}
# SNLI/MNLI mark examples without a gold label as -1 (hub) or "-" (raw files); LM-BFF drops them.
_NO_GOLD_TASKS, _NO_GOLD = {"mnli", "snli"}, {"-1", "-"}
_SINGLE_ALIASES = ("sentence", "text", "content")
_PAIR_ALIASES = (("premise", "hypothesis"), ("sentence1", "sentence2"), ("passage", "question"))
_LABEL_ALIASES = ("label", "gold_label", "coarse_label", "labels")
_HUB_CONFIG_DATASETS = {"glue", "super_glue"}
_SKIP = object()


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def get_task(name: str) -> TaskPreset:
    """Return the preset for any common spelling of a task name.

    >>> get_task("SST_2").name, get_task("BoolQ").name
    ('sst-2', 'boolq')
    """
    found = {_key(k): p for k, p in TASKS.items()}.get(_key(str(name)))
    if found is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return found


def _as_preset(task: str | TaskPreset | None) -> TaskPreset | None:
    return task if task is None or isinstance(task, TaskPreset) else get_task(task)


def fill_template(template: str, example: Example, strip_s1_punctuation: bool = False) -> str:
    """Fill ``<S1>``/``<S2>`` with the example's texts, keeping ``[MASK]`` in place.

    A template without ``<S1>`` is appended to the input (text_a, then text_b).

    >>> fill_template(get_task("rte").mlm_template, Example("It rains.", "It is wet.", "entailment"), True)
    'It rains ? [MASK] , It is wet.'
    >>> fill_template("It was [MASK]", Example("fine .", None, 1))
    'fine . It was [MASK]'
    """
    if "[MASK]" not in template:
        raise ValueError(f"template {template!r} has no [MASK] slot for the label word")
    if "<S2>" in template and example.text_b is None:
        raise ValueError(f"template {template!r} uses <S2> but the example has no text_b (single-sentence data?)")
    text_a = example.text_a
    if strip_s1_punctuation:
        # LM-BFF drops the premise's final mark so that the template's " ?" ends the sentence.
        text_a = text_a.rstrip().rstrip(".?!,;:").rstrip()
    values = {"<S1>": text_a, "<S2>": example.text_b}
    # One regex pass, so placeholders that happen to occur inside the texts stay untouched.
    out = re.sub(r"<S[12]>", lambda m: values[m.group()], template)
    if "<S1>" in template:
        return out
    parts = [text_a] + ([example.text_b] if example.text_b is not None and "<S2>" not in template else [])
    return " ".join(parts + [out])


# ---------------------------------------------------------------- loading

def _canon(value: Any) -> str:
    # Compare labels as text so JSON true never matches the int 1 (True == 1 in Python).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip().lower()


class _Labeler:
    """Maps raw label values to a preset's label keys (or keeps them, without a preset)."""

    def __init__(self, preset: TaskPreset | None, column: str) -> None:
        self.preset, self.skipped = preset, 0
        self.remap = _COLUMN_REMAP.get((preset.name, column)) if preset else None
        self.table: dict[str, Hashable] = {}
        if preset:
            self.table.update((str(i), key) for i, key in enumerate(_INT_CODES.get(preset.name, ())))
            self.table.update((_canon(key), key) for key in preset.labels)

    def __call__(self, raw: Any, where: str) -> Any:
        if raw is None:
            raise DataFormatError(f"{where}: the label is missing (null). Fill it in or drop the row")
        if self.preset is None:
            return raw.strip() if isinstance(raw, str) else raw
        text = _canon(raw)
        if self.remap and text.isdigit() and int(text) < len(self.remap):
            text = str(self.remap[int(text)])
        if text in self.table:
            return self.table[text]
        if self.preset.name in _NO_GOLD_TASKS and text in _NO_GOLD:
            self.skipped += 1
            return _SKIP
        raise DataFormatError(
            f"{where}: label {raw!r} is not a label of task {self.preset.name!r}; allowed: "
            f"{', '.join(map(repr, self.preset.labels))}. Fix the value, or check task= and the label column")


def _guess_text_fields(avail: Sequence[str], preset: TaskPreset | None) -> tuple[str, str | None] | None:
    if preset and all(f in avail for f in preset.text_fields):
        return preset.text_fields[0], (preset.text_fields[1] if len(preset.text_fields) > 1 else None)
    n_texts = len(preset.text_fields) if preset else None
    for a, b in _PAIR_ALIASES if n_texts in (None, 2) else ():
        if a in avail and b in avail:
            return a, b
    return next(((a, None) for a in _SINGLE_ALIASES if a in avail and n_texts in (None, 1)), None)


def _resolve_fields(avail: Sequence[str], preset: TaskPreset | None, columns: Mapping[str, str] | None,
                    where: str) -> tuple[str, str | None, str]:
    cols = dict(columns or {})
    if set(cols) - {"text_a", "text_b", "label"}:
        raise ValueError(f"columns keys must be text_a/text_b/label, got {sorted(cols)}")
    a, b = cols.get("text_a"), cols.get("text_b")
    if a is None:
        guess = _guess_text_fields(avail, preset)
        if guess is None:
            want = preset.text_fields if preset else _SINGLE_ALIASES
            raise DataFormatError(f"{where}: no text column among {list(avail)} (expected {', '.join(want)}). "
                                  "Pass columns={'text_a': ..., 'label': ...}")
        a, b = guess[0], b if "text_b" in cols else guess[1]
    label = cols.get("label") or next((c for c in _LABEL_ALIASES if c in avail), None)
    if label is None:
        raise DataFormatError(f"{where}: no label column among {list(avail)}. Pass columns={{'label': ...}}")
    for role, name in (("text_a", a), ("text_b", b), ("label", label)):
        if name is not None and name not in avail:
            raise DataFormatError(f"{where}: column {name!r} (for {role}) not found; the columns are "
                                  f"{list(avail)}. Fix columns= or the file's header")
    if preset and len(preset.text_fields) == 2 and b is None:
        raise DataFormatError(f"{where}: task {preset.name!r} needs two texts {preset.text_fields}, found only "
                              f"{a!r}. Pass columns={{'text_b': ...}}")
    return a, b, label


def _text(value: Any, key: str, where: str) -> str:
    if value is None or isinstance(value, (dict, list)):
        raise DataFormatError(f"{where}: field {key!r} is {value!r}, expected text. Fix the row or drop it")
    return str(value).strip()


def _build(rows: Iterable[tuple[str, Mapping[str, Any]]], preset: TaskPreset | None,
           columns: Mapping[str, str] | None, src: str, header_at: str | None = None,
           fields: tuple[str, str | None, str] | None = None) -> list[Example]:
    """Turn (location, row dict) pairs into examples; the header (or first row) fixes the field names."""
    out, labeler = [], None
    for where, row in rows:
        fields = fields or _resolve_fields(list(row), preset, columns, header_at or where)
        labeler = labeler or _Labeler(preset, fields[2])
        missing = [k for k in fields if k is not None and k not in row]
        if missing:
            raise DataFormatError(f"{where}: field {missing[0]!r} is missing (row has {sorted(row)}). "
                                  "Every row needs the same fields")
        label = labeler(row[fields[2]], where)
        if label is not _SKIP:
            text_b = None if fields[1] is None else _text(row[fields[1]], fields[1], where)
            out.append(Example(_text(row[fields[0]], fields[0], where), text_b, label))
    if labeler is None:
        raise DataFormatError(f"{src}, line 1: no examples found (empty file or only a header). "
                              "Check the path and that the file was fully written")
    if labeler.skipped:
        warnings.warn(f"{src}: skipped {labeler.skipped} rows without a gold label (-1 or '-')")
    # Without a preset keep labels as read, but "0"/"1" files become ints so they sort and compare sanely.
    if preset is None and all(isinstance(e.label, str) and re.fullmatch(r"-?\d+", e.label) for e in out):
        out = [replace(e, label=int(e.label)) for e in out]
    return out


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Old releases (TREC) contain stray Latin-1 bytes; decode per line so UTF-8 lines keep their characters.
        return "\n".join(_decode_line(b) for b in re.split(rb"\r\n|\r|\n", data))


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with 1-based numbers; CRLF/CR endings tolerated (str.splitlines would split more)."""
    return [(n, line) for n, line in enumerate(re.split(r"\r\n|\r|\n", _read_text(path)), 1) if line.strip()]


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _tsv_rows(path: Path, preset: TaskPreset | None, columns: Mapping[str, str] | None) -> tuple[str, Iterator]:
    lines = _lines(path)
    if not lines:
        raise DataFormatError(f"{path}, line 1: empty file; expected a header such as 'label<TAB>sentence'")
    header_at = f"{path}, line {lines[0][0]}"
    header = [h.strip() for h in lines[0][1].split("\t")]
    if columns is None and (_guess_text_fields(header, preset) is None
                            or not any(c in header for c in _LABEL_ALIASES)):
        # Unnamed/odd header: GLUE layout, column 1 label and column 2 text. A first row that
        # already holds a label is data, not a header.
        if len(header) < 2:
            raise DataFormatError(f"{header_at}: expected tab-separated 'label<TAB>text' columns, found "
                                  f"{header!r}. Separate columns with a tab or pass columns=")
        first_is_data = _canon(header[0]) in _Labeler(preset, "label").table if preset else \
            bool(re.fullmatch(r"-?\d+", header[0]))
        header = ["label", "sentence"] + [f"_{i}" for i in range(2, len(header))]
        lines = lines if first_is_data else lines[1:]
    else:
        lines = lines[1:]

    def rows() -> Iterator:
        for n, line in lines:
            cells = line.split("\t")
            if len(cells) < len(header):
                raise DataFormatError(f"{path}, line {n}: expected {len(header)} tab-separated columns like the "
                                      f"header, found {len(cells)}. Is the separator a tab?")
            yield f"{path}, line {n}", dict(zip(header, cells))
    return header_at, rows()


def _txt_rows(path: Path) -> Iterator:
    for n, line in _lines(path):
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            raise DataFormatError(f"{path}, line {n}: expected 'LABEL SENTENCE' (a space after the label), "
                                  f"found {line[:60]!r}. Add the missing part or delete the line")
        yield f"{path}, line {n}", {"label": parts[0], "sentence": parts[1]}


def _jsonl_rows(path: Path) -> Iterator:
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}, line {n}: invalid JSON ({e.msg}, column {e.colno}). Each line "
                                  "must be one JSON object; a single JSON list belongs in a .json file") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}, line {n}: expected a JSON object per line, found {type(obj).__name__}")
        yield f"{path}, line {n}", obj


def _json_rows(path: Path) -> Iterator:
    text = _read_text(path)
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line in a .json file: read it as JSON lines
            yield from _jsonl_rows(path)
            return
        raise DataFormatError(f"{path}, line {e.lineno}: invalid JSON ({e.msg}). Expected a JSON list of "
                              "objects") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}, line 1: expected a JSON list of objects, found {type(data).__name__}")
    for i, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}, item {i}: expected a JSON object, found {type(obj).__name__}")
        yield f"{path}, item {i}", obj


def _csv_rows(path: Path, preset: TaskPreset | None, columns: Mapping[str, str] | None) -> tuple[str, Iterator]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))

    def fail(e: Exception) -> DataFormatError:
        return DataFormatError(f"{path}, line {reader.line_num}: {e}. Check the quoting")
    try:
        header = next((h for h in reader if any(c.strip() for c in h)), None)
    except csv.Error as e:
        raise fail(e) from None
    if header is None:
        raise DataFormatError(f"{path}, line 1: empty file; expected a header such as 'sentence,label'")
    header, header_at = [h.strip() for h in header], f"{path}, line {reader.line_num}"

    def rows() -> Iterator:
        try:
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(header):
                    raise DataFormatError(f"{path}, line {reader.line_num}: expected {len(header)} comma-separated "
                                          f"fields like the header, found {len(cells)}. Quote fields with commas")
                yield f"{path}, line {reader.line_num}", dict(zip(header, cells))
        except csv.Error as e:
            raise fail(e) from None
    return header_at, rows()


# Each loader returns (header location or None, iterator of (location, row dict)).
_LOADERS: dict[str, Callable[..., tuple[str | None, Iterator]]] = {
    ".tsv": _tsv_rows, ".csv": _csv_rows,
    **{ext: (lambda f: lambda path, *_: (None, f(path)))(f)
       for ext, f in ((".txt", _txt_rows), (".jsonl", _jsonl_rows), (".json", _json_rows))},
}


def _hub_split(preset: TaskPreset | None, split: str) -> str:
    if split not in ("dev", "val"):
        return split
    # MNLI has two dev sets; LM-BFF reports the matched one. TREC mirrors its local layout (dev from train).
    return {"mnli": "validation_matched", "trec": "train"}.get(preset.name if preset else "", "validation")


def _parse_hub_name(source: str) -> tuple[str, str | None]:
    spec = source[4:] if source.startswith("hub:") else source
    if ":" in spec:
        name, config = spec.split(":", 1)
        return name, config or None
    parts = spec.split("/")
    if len(parts) == 3 or (len(parts) == 2 and parts[0] in _HUB_CONFIG_DATASETS):
        return "/".join(parts[:-1]), parts[-1]  # "glue/sst2", "nyu-mll/glue/sst2"
    return spec, None


def _load_hf(source: str, preset: TaskPreset | None, split: str, columns: Mapping[str, str] | None) -> list:
    try:
        import datasets  # lazy: heavy, and only this path needs it
    except ImportError as e:
        raise ImportError(f"loading {source!r} needs the `datasets` package (pip install datasets)") from e
    if Path(source).expanduser().is_dir():
        try:
            ds = datasets.load_from_disk(str(Path(source).expanduser()))
        except FileNotFoundError as e:
            raise DataFormatError(f"{source}, line 1: directory is not a datasets save_to_disk folder ({e}). "
                                  "Point at a data file or at the folder save_to_disk wrote") from e
    else:
        name, config = _parse_hub_name(source)
        try:
            ds = datasets.load_dataset(name, *([config] if config else []), split=_hub_split(preset, split))
        except Exception as e:  # the hub raises many types (offline, missing, scripts); report them as one
            raise DataFormatError(
                f"{source}: could not load Hugging Face dataset {name!r} (config {config!r}, split "
                f"{_hub_split(preset, split)!r}): {type(e).__name__}: {e}. Offline? Pass a local file "
                "(.tsv/.txt/.jsonl/.json/.csv) or a save_to_disk directory instead") from e
    if isinstance(ds, datasets.DatasetDict):
        key = next((s for s in (split, _hub_split(preset, split)) if s in ds), None)
        if key is None:
            raise DataFormatError(f"{source}: no split {split!r}; available: {list(ds)}. Pass split=")
        ds = ds[key]
    fields = _resolve_fields(ds.column_names, preset, columns, source)
    keys = [k for k in fields if k is not None]
    rows = ((f"{source}, row {i}", dict(zip(keys, vals))) for i, vals in enumerate(zip(*(ds[k] for k in keys)), 1))
    return _build(rows, preset, columns, source, fields=fields)


def load_examples(source: str, task: str | TaskPreset | None = None, *, split: str = "train",
                  columns: dict[str, str] | None = None, data_root: str | None = None) -> list[Example]:
    """Load examples from a file (by extension), a ``save_to_disk`` directory or the Hugging Face hub.

    Files: ``.tsv`` (header), ``.txt`` (``LABEL SENTENCE``), ``.jsonl``, ``.json`` (a list), ``.csv``.
    ``columns`` maps ``text_a``/``text_b``/``label`` to the source's column names. A relative
    ``source`` is also looked up under ``data_root``. ``split`` only matters for datasets
    (``"dev"`` means the hub's validation split); a file is its own split. Labels are normalized
    to the preset's keys; problems raise :class:`DataFormatError` naming file and line.
    Hub names: ``"hub:glue:sst2"``, ``"glue/sst2"``, ``"SetFit/sst5"``.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "tiny.txt"
    >>> _ = path.write_text("4 a gorgeous film .\\n0 a dull mess .\\n")
    >>> [(e.text_a, e.label) for e in load_examples(str(path), "sst-5")]
    [('a gorgeous film .', 4), ('a dull mess .', 0)]
    """
    preset = _as_preset(task)
    path, root = Path(source).expanduser(), data_root or default_data_root()
    if not path.exists() and root and not path.is_absolute() and (Path(root) / path).exists():
        path = Path(root) / path
    if source.startswith("hub:") or (not path.exists() and path.suffix.lower() not in _LOADERS
                                     and not source.startswith((".", "/", "~"))):
        return _load_hf(source, preset, split, columns)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file" + (f" (also looked under {root})" if root else ""))
    if path.is_dir():
        return _load_hf(str(path), preset, split, columns)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataFormatError(f"{path}, line 1: unsupported file type {path.suffix!r}; use one of "
                              f"{', '.join(_LOADERS)} or a datasets save_to_disk directory")
    if preset and len(preset.text_fields) == 2 and path.suffix.lower() == ".txt":
        raise DataFormatError(f"{path}, line 1: 'LABEL SENTENCE' text holds one sentence but task "
                              f"{preset.name!r} needs two. Use .jsonl/.tsv/.csv")
    header_at, rows = loader(path, preset, columns)
    return _build(rows, preset, columns, str(path), header_at)


def default_data_root() -> str | None:
    """``$SGLANG_MEZO_DATA_DIR`` if set, else ``<repo>/../shared/data`` if it exists, else None.

    >>> default_data_root() is None or isinstance(default_data_root(), str)
    True
    """
    if os.environ.get("SGLANG_MEZO_DATA_DIR"):
        return os.environ["SGLANG_MEZO_DATA_DIR"]
    shared = Path(__file__).resolve().parents[3].parent / "shared" / "data"  # repo = python/sglang/srt/..
    return str(shared) if shared.is_dir() else None


def resolve_task_data(task: str | TaskPreset, split: str, data_root: str | None = None) -> str:
    """Path of the task's local file for ``split`` ("train"/"dev"), else ``"hub:<name>[:<config>]"``.

    TREC has no dev file: "dev" resolves to the train file, so sample a disjoint dev from it.

    >>> resolve_task_data("mnli", "dev", data_root="/nonexistent")
    'hub:glue:mnli'
    """
    preset = _as_preset(task)
    split = "dev" if split in ("val", "validation") else split
    root = data_root or default_data_root()
    rel = preset.local_files.get(split) or (preset.local_files.get("train") if split == "dev" else None)
    if root and rel and (Path(root) / rel).is_file():
        return str(Path(root) / rel)
    return "hub:" + ":".join(preset.hub_name)


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


def _pairs(preds: Iterable, labels: Iterable) -> tuple[list, list]:
    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels) or not labels:
        raise ValueError(f"need equally many, non-zero predictions and labels (got {len(preds)}, {len(labels)})")
    return preds, labels


def accuracy(preds: Iterable, labels: Iterable) -> float:
    """Fraction of predictions equal to the labels.

    >>> accuracy([1, 0, 1, 1], [1, 1, 1, 0])
    0.5
    """
    preds, labels = _pairs(preds, labels)
    return sum(p == y for p, y in zip(preds, labels)) / len(labels)


def macro_f1(preds: Iterable, labels: Iterable) -> float:
    """Unweighted mean of per-class F1 over every class seen in labels or predictions.

    >>> round(macro_f1([0, 1, 1, 1], [0, 0, 1, 1]), 4)  # F1 2/3 and 4/5
    0.7333
    """
    preds, labels = _pairs(preds, labels)
    scores = []
    for c in set(labels) | set(preds):
        tp = sum(p == c and y == c for p, y in zip(preds, labels))
        fp = sum(p == c and y != c for p, y in zip(preds, labels))
        fn = sum(p != c and y == c for p, y in zip(preds, labels))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def compute_metric(metric: str, preds: Iterable, labels: Iterable) -> float:
    """Dispatch on a preset's ``metric`` name ("accuracy" or "macro_f1").

    >>> compute_metric(get_task("cb").metric, ["neutral"], ["neutral"])
    1.0
    """
    funcs = {"accuracy": accuracy, "acc": accuracy, "macro_f1": macro_f1, "f1": macro_f1}
    if metric not in funcs:
        raise ValueError(f"unknown metric {metric!r}; use 'accuracy' or 'macro_f1'")
    return funcs[metric](preds, labels)


# ---------------------------------------------------------------- the data of one run

DEFAULT_K_SHOT = 16
DEFAULT_DATA_SEED = 42  # one of LM-BFF's five data seeds
#: A dataset as a run takes it: a path or hub name :func:`load_examples` reads, a list of
#: :class:`Example`, or None for the task's own data.
DataSource = Union[str, os.PathLike, Sequence[Example], None]


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
