"""Task files into :class:`~sglang.srt.mezo.data.examples.Example` rows with normalized labels:
GLUE TSV, ``LABEL SENTENCE`` text, SuperGLUE JSONL, CSV, JSON, or a Hugging Face dataset (``datasets``
is imported only when a hub or disk dataset is asked for). A malformed row raises
:class:`~sglang.srt.mezo.errors.DataFormatError` with its file and line.

>>> default_data_root() is None or isinstance(default_data_root(), str)
True
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Sequence

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.objective_table import task_rows
from sglang.srt.mezo.data.presets import TaskPreset, as_preset
from sglang.srt.mezo.errors import DataFormatError

logger = logging.getLogger(__name__)


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


def _choices(row: Mapping[str, Any], label: Any, where: str) -> tuple[str, ...]:
    """A multiple-choice row's options: a list of at least two texts that ``label`` indexes."""
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataFormatError(f"{where}: field 'choices' is {choices!r}; a multiple-choice row needs a list of at "
                              "least two non-empty answer texts, and 'label' the index of the right one")
    if not isinstance(label, int) or not 0 <= label < len(choices):
        raise DataFormatError(f"{where}: label {label!r} is not an index into the row's {len(choices)} choices")
    return tuple(c.strip() for c in choices)


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
            choices = _choices(row, label, where) if preset and task_rows(preset.objective) == "options" else None
            out.append(Example(_text(row[fields[0]], fields[0], where), text_b, label, choices))
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


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    """A text file's non-blank lines with their 1-based numbers (for errors that name the line);
    CRLF/CR endings tolerated (str.splitlines would split more).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> numbered_lines(path)
    [(1, '{"a": 1}'), (3, '{"a": 2}')]
    """
    return [(n, line) for n, line in enumerate(re.split(r"\r\n|\r|\n", _read_text(path)), 1) if line.strip()]


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _tsv_rows(path: Path, preset: TaskPreset | None, columns: Mapping[str, str] | None) -> tuple[str, Iterator]:
    lines = numbered_lines(path)
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
    for n, line in numbered_lines(path):
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            raise DataFormatError(f"{path}, line {n}: expected 'LABEL SENTENCE' (a space after the label), "
                                  f"found {line[:60]!r}. Add the missing part or delete the line")
        yield f"{path}, line {n}", {"label": parts[0], "sentence": parts[1]}


def jsonl_objects(path: Path, hint: str = "") -> Iterator[tuple[str, dict]]:
    """("<path>, line N", object) for each non-blank line of a JSON-lines file; a line that is not
    one JSON object raises :class:`DataFormatError` naming it (``hint`` ends the invalid-JSON message).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"a": 1}\\n')
    >>> [(where.endswith("line 1"), obj) for where, obj in jsonl_objects(path)]
    [(True, {'a': 1})]
    """
    for n, line in numbered_lines(path):
        where = f"{path}, line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{where}: invalid JSON ({e.msg}, column {e.colno}). Each line must be one "
                                  f"JSON object{hint}") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where}: expected a JSON object per line, found {type(obj).__name__}")
        yield where, obj


def _jsonl_rows(path: Path) -> Iterator:
    return jsonl_objects(path, "; a single JSON list belongs in a .json file")


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
        import datasets  # noqa: PLC0415 - seconds to import, only this path needs it, data/ imports without it
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
    preset = as_preset(task)
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
    shared = Path(__file__).resolve().parents[5].parent / "shared" / "data"  # repo = python/sglang/srt/mezo/data/..
    return str(shared) if shared.is_dir() else None


def resolve_task_data(task: str | TaskPreset, split: str, data_root: str | None = None) -> str:
    """Path of the task's local file for ``split`` ("train"/"dev"), else ``"hub:<name>[:<config>]"``.

    TREC has no dev file: "dev" resolves to the train file, so sample a disjoint dev from it.

    >>> resolve_task_data("mnli", "dev", data_root="/nonexistent")
    'hub:glue:mnli'
    """
    preset = as_preset(task)
    split = "dev" if split in ("val", "validation") else split
    root = data_root or default_data_root()
    rel = preset.local_files.get(split) or (preset.local_files.get("train") if split == "dev" else None)
    if root and rel and (Path(root) / rel).is_file():
        return str(Path(root) / rel)
    return "hub:" + ":".join(preset.hub_name)
