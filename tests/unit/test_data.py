"""Tests for sglang.srt.mezo_tasks: presets, templates, loaders, k-shot sampling, metrics."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import huggingface_hub.constants as hub_constants
import pytest
from sglang.srt import mezo_tasks as mt

from sglang.srt.mezo.data import loaders
from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.loaders import default_data_root, load_examples, resolve_task_data
from sglang.srt.mezo.data.metrics import accuracy, compute_metric, macro_f1
from sglang.srt.mezo.data.presets import LABEL_WORD_TASKS, TASKS, fill_template, get_task
from sglang.srt.mezo.data.sampling import LM_BFF_SEEDS, sample_k_shot
from sglang.srt.mezo.errors import DataFormatError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data folder absent")


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(p)


def assert_format_error(path: str, line: int | str, *parts: str, **kw) -> str:
    """Load and check the error names the file, the line and the given fragments."""
    with pytest.raises(DataFormatError) as info:
        load_examples(path, **kw)
    msg = str(info.value)
    assert Path(path).name in msg and f"line {line}" in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


# ---------------------------------------------------------------- module hygiene and presets

def test_module_imports_neither_torch_nor_sglang_internals():
    # Import data/ and run_spec/ from this checkout alone, without site-packages (-S): the upstream
    # `sglang` package, whose __init__ pulls in torch, is then not there to be imported at all.
    python_dir = str(Path(mt.__file__).resolve().parents[2])
    code = ("import importlib, pkgutil, sys; sys.path.insert(0, sys.argv[1]); import sglang.srt.mezo.data as d, "
            "sglang.srt.mezo.run_spec as s; import sglang.srt.mezo_tasks; "
            "[importlib.import_module(m.name) for p in (d, s) for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]; "
            "bad = [x for x in ('torch', 'sglang.srt.utils', 'datasets', 'transformers') if x in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-S", "-c", code, python_dir], check=True)


def test_docstring_examples_run():
    assert doctest.testmod(mt).failed == 0


@pytest.mark.parametrize("spelling", ["sst-2", "sst2", "SST-2", "SST2", "sst_2", " Sst 2"])
def test_get_task_spellings(spelling):
    assert get_task(spelling) is TASKS["sst-2"]


def test_get_task_other_names():
    assert [get_task(n).name for n in ("SST5", "TREC", "MNLI", "snli", "RTE", "CB", "BoolQ", "bool_q")] == \
        ["sst-5", "trec", "mnli", "snli", "rte", "cb", "boolq", "boolq"]


def test_get_task_unknown_lists_known():
    with pytest.raises(ValueError, match="unknown task 'cola'.*sst-2.*boolq"):
        get_task("cola")


@pytest.mark.parametrize("name", LABEL_WORD_TASKS)
def test_presets_are_consistent(name):
    p = TASKS[name]
    assert p.name == name and p.metric in ("accuracy", "macro_f1") and p.max_length in (128, 256)
    for template, words in ((p.mlm_template, p.mlm_label_words), (p.causal_template, p.causal_label_words)):
        assert (template is None) == (words is None)
        if template is not None:
            assert "[MASK]" in template and set(words) == set(p.labels)
            assert all(w == w.strip() for w in words.values())  # no leading space: tokenizer adds it
            assert ("<S2>" in template) == (len(p.text_fields) == 2) or "<S1>" not in template
    if p.causal_template is not None:
        assert p.causal_template.endswith("[MASK]")
    assert hash(p)  # usable as a dict key despite dict fields


def test_preset_table_values():
    assert TASKS["trec"].mlm_label_words[2] == "Expression" and TASKS["trec"].local_files == {"train": "trec/train.txt"}
    assert TASKS["cb"].metric == "macro_f1" and TASKS["cb"].mlm_template == TASKS["rte"].mlm_template
    assert TASKS["mnli"].mlm_label_words == {"contradiction": "No", "entailment": "Yes", "neutral": "Maybe"}
    assert TASKS["boolq"].labels == (True, False) and TASKS["boolq"].mlm_template is None
    assert [TASKS[n].strip_s1_punctuation for n in ("mnli", "snli", "rte", "sst-2")] == [True, True, True, False]
    assert LM_BFF_SEEDS == (13, 21, 42, 87, 100)


# ---------------------------------------------------------------- templates

def test_fill_template_sst2():
    ex = Example("a gorgeous , witty film .", None, 1)
    p = get_task("sst-2")
    assert fill_template(p.mlm_template, ex) == "a gorgeous , witty film . It was [MASK] ."
    assert fill_template(p.causal_template, ex) == "a gorgeous , witty film . It was [MASK]"


def test_fill_template_rte_strips_premise_punctuation_for_mlm_only():
    ex = Example("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
                 "not_entailment")
    p = get_task("rte")
    assert fill_template(p.mlm_template, ex, p.strip_s1_punctuation) == \
        "No Weapons of Mass Destruction Found in Iraq Yet ? [MASK] , Weapons of Mass Destruction Found in Iraq."
    assert fill_template(p.mlm_template, ex) == \
        "No Weapons of Mass Destruction Found in Iraq Yet. ? [MASK] , Weapons of Mass Destruction Found in Iraq."
    assert fill_template(p.causal_template, ex) == ("No Weapons of Mass Destruction Found in Iraq Yet.\n"
                                                    'Does this mean that "Weapons of Mass Destruction Found in '
                                                    'Iraq." is true? Yes or No?\n[MASK]')
    assert fill_template(p.mlm_template, Example("tokenized text .", "b", "entailment"), True) == \
        "tokenized text ? [MASK] , b"


def test_fill_template_trec_cb_boolq():
    q = Example("What currency is used in Australia ?", None, 1)
    assert fill_template(get_task("trec").mlm_template, q) == "[MASK] : What currency is used in Australia ?"
    assert fill_template(get_task("trec").causal_template, q) == \
        "What currency is used in Australia ? Answer type: [MASK]"
    cb = Example("It was a complex language.", "the language was peeled down", "entailment")
    assert fill_template(get_task("cb").causal_template, cb) == \
        'Suppose It was a complex language. Can we infer that "the language was peeled down"? ' \
        'Yes, No, or Maybe?\n[MASK]'
    assert fill_template(get_task("cb").mlm_template, cb, True) == \
        "It was a complex language ? [MASK] , the language was peeled down"
    bq = Example("Ghost in the Shell -- an anime.", "is ghost in the shell based on the anime", True)
    assert fill_template(get_task("boolq").causal_template, bq) == \
        "Ghost in the Shell -- an anime. is ghost in the shell based on the anime?\n[MASK]"


@pytest.mark.parametrize("name", LABEL_WORD_TASKS)
def test_fill_template_every_preset(name):
    p = TASKS[name]
    ex = Example("first one.", "second one." if len(p.text_fields) == 2 else None, p.labels[0])
    for template in filter(None, (p.mlm_template, p.causal_template)):
        out = fill_template(template, ex, p.strip_s1_punctuation)
        assert "[MASK]" in out and "<S1>" not in out and "<S2>" not in out and "first one" in out


def test_fill_template_without_s1_appends_and_validates():
    assert fill_template("It was [MASK] .", Example("fine .", None, 1)) == "fine . It was [MASK] ."
    assert fill_template("? [MASK]", Example("a", "b", 0)) == "a b ? [MASK]"
    assert fill_template("[MASK] , <S2>", Example("a.", "b", 0), True) == "a [MASK] , b"
    # Placeholder-looking text inside the inputs is not substituted again.
    assert fill_template("<S1> [MASK] <S2>", Example("says <S2>", "b", 0)) == "says <S2> [MASK] b"
    with pytest.raises(ValueError, match=r"no \[MASK\]"):
        fill_template("<S1> It was", Example("x", None, 0))
    with pytest.raises(ValueError, match="no text_b"):
        fill_template("<S1> ? [MASK] , <S2>", Example("x", None, 0))


# ---------------------------------------------------------------- loaders: good files

def test_tsv_header_variants(tmp_path):
    for header in ("label\tsentence", "label\tcontent", "sentence\tlabel", "y\tx"):
        rows = ["1\ta fine film ."] if not header.startswith("sentence") else ["a fine film .\t1"]
        path = write(tmp_path, "s.tsv", "\n".join([header, *rows, "", rows[0].replace("1", "0")]) + "\n")
        assert load_examples(path, "sst-2") == [Example("a fine film .", None, 1), Example("a fine film .", None, 0)]
    # A headerless GLUE-style file keeps its first row; CRLF endings are fine.
    path = write(tmp_path, "nohead.tsv", "0\tbad .\r\n1\tgood .\r\n")
    assert [e.label for e in load_examples(path, "sst-2")] == [0, 1]


def test_tsv_named_columns_for_pairs_and_int_nli_labels(tmp_path):
    path = write(tmp_path, "mnli.tsv", "idx\ts1\ts2\tgold\n0\tA man sleeps.\tA man rests.\t0\n"
                                       "1\tA dog.\tA cat.\t2\n2\tx\ty\t-1\n3\tp\th\tneutral\n")
    with pytest.warns(UserWarning, match="skipped 1 rows"):
        exs = load_examples(path, "mnli", columns={"text_a": "s1", "text_b": "s2", "label": "gold"})
    assert exs == [Example("A man sleeps.", "A man rests.", "entailment"), Example("A dog.", "A cat.", "contradiction"),
                   Example("p", "h", "neutral")]
    glue = write(tmp_path, "glue.tsv", "index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tentailment\n")
    assert load_examples(glue, "snli") == [Example("a", "b", "entailment")]


def test_txt_and_latin1_bytes(tmp_path):
    path = write(tmp_path, "t.txt", b"4 a stirring film\n\n0 caf\xc3\xa9 dull\n2 sister\xf0city ?\n")
    assert load_examples(path, "sst-5") == [Example("a stirring film", None, 4), Example("café dull", None, 0),
                                            Example("sister\xf0city ?", None, 2)]


def test_jsonl_superglue_and_generic(tmp_path):
    rte = write(tmp_path, "rte.jsonl", json.dumps({"premise": "P.", "hypothesis": "H.", "label": "entailment",
                                                   "idx": 0}) + "\n" +
                json.dumps({"premise": "Q.", "hypothesis": "I.", "label": 1, "idx": 1}) + "\n")
    assert load_examples(rte, "RTE") == [Example("P.", "H.", "entailment"), Example("Q.", "I.", "not_entailment")]
    boolq = write(tmp_path, "b.jsonl", "\n".join(json.dumps(r) for r in (
        {"question": "is it", "passage": "It is.", "label": True}, {"question": "q", "passage": "p", "label": "false"},
        {"question": "q2", "passage": "p2", "label": 1})))
    assert load_examples(boolq, "boolq") == [Example("It is.", "is it", True), Example("p", "q", False),
                                             Example("p2", "q2", True)]
    generic = write(tmp_path, "g.jsonl", '{"review": "ok", "stars": "3"}\n{"review": "bad", "stars": "1"}\n')
    assert load_examples(generic, "sst-5", columns={"text_a": "review", "label": "stars"}) == \
        [Example("ok", None, 3), Example("bad", None, 1)]


def test_csv_and_json(tmp_path):
    csv_path = write(tmp_path, "d.csv", 'text,label\n"good, really",1\n\nbad,0\n')
    assert load_examples(csv_path, "sst-2") == [Example("good, really", None, 1), Example("bad", None, 0)]
    mapped = write(tmp_path, "m.csv", "q,kind\nWhat is X ?,0\n")
    assert load_examples(mapped, "trec", columns={"text_a": "q", "label": "kind"}) == [Example("What is X ?", None, 0)]
    js = write(tmp_path, "d.json", json.dumps([{"premise": "a", "hypothesis": "b", "label": "neutral"}]))
    assert load_examples(js, "cb") == [Example("a", "b", "neutral")]
    lines_in_json = write(tmp_path, "l.json", '{"sentence": "x", "label": 0}\n{"sentence": "y", "label": 1}\n')
    assert [e.label for e in load_examples(lines_in_json, "sst-2")] == [0, 1]


def test_without_preset_labels_stay_as_read(tmp_path):
    ints = write(tmp_path, "i.tsv", "label\tsentence\n0\ta\n12\tb\n")
    assert [e.label for e in load_examples(ints)] == [0, 12]
    strs = write(tmp_path, "s.jsonl", '{"premise": "a", "hypothesis": "b", "label": "yes"}\n'
                                      '{"premise": "c", "hypothesis": "d", "label": "2"}\n')
    assert load_examples(strs) == [Example("a", "b", "yes"), Example("c", "d", "2")]


def test_relative_source_under_data_root(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "x.txt", "1 hi\n")
    assert load_examples("sub/x.txt", "sst-2", data_root=str(tmp_path)) == [Example("hi", None, 1)]


# ---------------------------------------------------------------- loaders: malformed input

@pytest.mark.parametrize("name", ["e.tsv", "e.txt", "e.jsonl", "e.json", "e.csv"])
def test_empty_files(tmp_path, name):
    assert_format_error(write(tmp_path, name, "\n\n"), 1, "empty" if name.endswith(("tsv", "csv")) else "no examples")


def test_malformed_rows_name_file_and_line(tmp_path):
    assert_format_error(write(tmp_path, "short.tsv", "label\tsentence\n1\tok\n0 no tab here\n"), 3, "tab",
                        task="sst-2")
    assert_format_error(write(tmp_path, "nosep.txt", "1 fine\n2\n"), 2, "LABEL SENTENCE", task="sst-5")
    assert_format_error(write(tmp_path, "bad.jsonl", '{"sentence": "a", "label": 0}\n\n{"sentence": "b",\n'), 3,
                        "invalid JSON", task="sst-2")
    assert_format_error(write(tmp_path, "arr.jsonl", "[1, 2]\n"), 1, "JSON object", task="sst-2")
    assert_format_error(write(tmp_path, "miss.jsonl", '{"premise": "a", "hypothesis": "b", "label": 0}\n'
                                                      '{"premise": "a", "label": 0}\n'), 2, "'hypothesis'", task="rte")
    assert_format_error(write(tmp_path, "bad.json", '[{"sentence": "a",\n "label": }]'), 2, "invalid JSON")
    assert_format_error(write(tmp_path, "obj.json", '{"sentence": "a"}'), 1, "JSON list")
    assert_format_error(write(tmp_path, "cols.csv", "sentence,label\na,1\nb,0,extra\n"), 3, "comma", task="sst-2")
    assert_format_error(write(tmp_path, "null.jsonl", '{"sentence": null, "label": 0}\n'), 1, "'sentence'",
                        task="sst-2")


def test_bad_label_names_value_and_allowed(tmp_path):
    msg = assert_format_error(write(tmp_path, "lab.tsv", "label\tsentence\n1\tok\n7\tbad\n"), 3, "'7'", "0, 1",
                              task="sst-2")
    assert "sst-2" in msg
    assert_format_error(write(tmp_path, "lab.jsonl", '{"premise": "a", "hypothesis": "b", "label": "maybe"}\n'), 1,
                        "'maybe'", "'entailment', 'not_entailment'", task="rte")
    # JSON booleans are not silently taken as 0/1 for integer-labelled tasks.
    assert_format_error(write(tmp_path, "bool.jsonl", '{"sentence": "a", "label": true}\n'), 1, "True", task="sst-2")


def test_missing_columns_and_bad_columns_mapping(tmp_path):
    path = write(tmp_path, "c.csv", "review,stars\nok,1\n")
    assert_format_error(path, 1, "no text column", "columns=", task="sst-2")
    assert_format_error(path, 1, "'nope'", "review", task="sst-2", columns={"text_a": "nope", "label": "stars"})
    one = write(tmp_path, "one.jsonl", '{"sentence": "a", "label": "entailment"}\n')
    assert_format_error(one, 1, "no text column", "premise, hypothesis", task="rte")
    assert_format_error(one, 1, "needs two texts", task="rte", columns={"text_a": "sentence"})
    with pytest.raises(ValueError, match="text_a/text_b/label"):
        load_examples(path, "sst-2", columns={"text": "review"})


def test_unsupported_and_missing_files(tmp_path):
    assert_format_error(write(tmp_path, "d.parquetx", "x"), 1, "unsupported file type")
    with pytest.raises(FileNotFoundError):
        load_examples(str(tmp_path / "missing.tsv"), "sst-2")
    assert_format_error(write(tmp_path, "p.txt", "1 a\n"), 1, "needs two", task="rte")


# ---------------------------------------------------------------- datasets (disk) and hub

def test_load_from_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"sentence": ["good .", "bad ."], "label": [1, 0]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert load_examples(str(tmp_path / "ds"), "sst-2") == [Example("good .", None, 1), Example("bad .", None, 0)]
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [0]}),
        "validation": datasets.Dataset.from_dict({"premise": ["c", "e"], "hypothesis": ["d", "f"], "label": [2, -1]}),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_examples(str(tmp_path / "dd"), "snli") == [Example("a", "b", "entailment")]
    with pytest.warns(UserWarning, match="without a gold label"):
        assert load_examples(str(tmp_path / "dd"), "snli", split="dev") == [Example("c", "d", "contradiction")]
    # The hub's TREC ordering (ABBR, ENTY, DESC, ...) is remapped to the LM-BFF file ordering.
    trec = datasets.Dataset.from_dict({"text": ["What is NASA ?", "Why ?", "Who ?"], "coarse_label": [0, 2, 3]})
    trec.save_to_disk(str(tmp_path / "trec"))
    assert [e.label for e in load_examples(str(tmp_path / "trec"), "trec")] == [2, 0, 3]
    (tmp_path / "plain").mkdir()
    assert_format_error(str(tmp_path / "plain"), 1, "save_to_disk")


def test_offline_hub_name_fails_clearly(monkeypatch):
    datasets = pytest.importorskip("datasets")
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    # The libraries read these at import time, which may already have happened in this process.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataFormatError, match="no-such-owner/no-such-dataset.*Offline"):
        load_examples("hub:no-such-owner/no-such-dataset:cfg", "sst-2")


def test_hub_name_parsing():
    assert loaders._parse_hub_name("hub:glue:sst2") == ("glue", "sst2")
    assert loaders._parse_hub_name("glue/sst2") == ("glue", "sst2")
    assert loaders._parse_hub_name("hub:SetFit/sst5") == ("SetFit/sst5", None)
    assert loaders._parse_hub_name("SetFit/sst5") == ("SetFit/sst5", None)
    assert loaders._parse_hub_name("nyu-mll/glue/mnli") == ("nyu-mll/glue", "mnli")
    assert loaders._hub_split(get_task("mnli"), "dev") == "validation_matched"
    assert loaders._hub_split(get_task("rte"), "dev") == "validation"


# ---------------------------------------------------------------- data roots

def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SGLANG_MEZO_DATA_DIR", str(tmp_path))
    assert default_data_root() == str(tmp_path)
    monkeypatch.delenv("SGLANG_MEZO_DATA_DIR")
    expected = Path(mt.__file__).resolve().parents[3].parent / "shared" / "data"
    assert default_data_root() == (str(expected) if expected.is_dir() else None)


def test_resolve_task_data_falls_back_to_hub(tmp_path):
    assert resolve_task_data("sst2", "train", str(tmp_path)) == "hub:glue:sst2"
    assert resolve_task_data("rte", "dev", str(tmp_path)) == "hub:super_glue:rte"
    assert resolve_task_data("sst-5", "dev", str(tmp_path)) == "hub:SetFit/sst5"
    assert resolve_task_data(get_task("snli"), "dev", str(tmp_path)) == "hub:snli"


@needs_data
def test_resolve_task_data_local():
    assert resolve_task_data("SST-2", "train", str(DATA)) == str(DATA / "sst2" / "train.tsv")
    assert resolve_task_data("boolq", "validation", str(DATA)) == str(DATA / "boolq" / "val.jsonl")
    assert resolve_task_data("trec", "dev", str(DATA)) == str(DATA / "trec" / "train.txt")
    assert resolve_task_data("mnli", "dev", str(DATA)) == "hub:glue:mnli"


# ---------------------------------------------------------------- real data

REAL = [("sst-2", "train", 67349), ("sst-2", "dev", 872), ("sst-5", "train", 8544), ("sst-5", "dev", 1101),
        ("trec", "train", 5452), ("rte", "train", 2490), ("rte", "dev", 277), ("cb", "train", 250),
        ("cb", "dev", 56), ("boolq", "train", 32), ("boolq", "dev", 3270)]


@needs_data
@pytest.mark.parametrize("task,split,rows", REAL)
def test_real_files_load_with_row_counts(task, split, rows):
    path = resolve_task_data(task, split, str(DATA))
    assert not path.startswith("hub:")
    exs = load_examples(path, task)
    assert len(exs) == rows
    assert set(e.label for e in exs) == set(get_task(task).labels)
    assert all(e.text_a for e in exs) and all((e.text_b is not None) == (task in ("rte", "cb", "boolq")) for e in exs)


@needs_data
def test_real_trec_k_shot_dev_disjoint_from_train():
    exs = load_examples(resolve_task_data("trec", "dev", str(DATA)), "trec")
    train, dev = sample_k_shot(exs, 16, 42)
    assert len(train) == len(dev) == 96 and not set(train) & set(dev)


# ---------------------------------------------------------------- k-shot sampling

def make(n_per_class: dict) -> list[Example]:
    return [Example(f"{label}-{i}", None, label) for label, n in n_per_class.items() for i in range(n)]


def test_k_shot_balanced_disjoint_deterministic():
    data = make({0: 50, 1: 80, 2: 40})
    train, dev = sample_k_shot(data, 16, 13)
    assert Counter(e.label for e in train) == Counter(e.label for e in dev) == {0: 16, 1: 16, 2: 16}
    assert not set(train) & set(dev)
    assert (train, dev) == sample_k_shot(list(data), 16, 13)
    others = [sample_k_shot(data, 16, s)[0] for s in LM_BFF_SEEDS]
    assert len({tuple(t) for t in others}) == len(LM_BFF_SEEDS)
    assert [e.label for e in train] != sorted(e.label for e in train)  # shuffled across classes


def test_k_shot_small_class_warns_and_without_dev():
    with pytest.warns(UserWarning, match="class 1 has 5 examples"):
        train, dev = sample_k_shot(make({0: 10, 1: 5}), 4, 21)
    assert Counter(e.label for e in train) == {0: 4, 1: 4} and Counter(e.label for e in dev) == {0: 4, 1: 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, dev = sample_k_shot(make({"a": 4, "b": 6}), 4, 21, with_dev=False)
    assert dev == [] and Counter(e.label for e in train) == {"a": 4, "b": 4}
    with pytest.raises(ValueError):
        sample_k_shot(make({0: 3}), 0, 1)


# ---------------------------------------------------------------- metrics

def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(["entailment"], ["entailment"]) == 1.0
    with pytest.raises(ValueError):
        accuracy([1], [1, 0])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_macro_f1_hand_computed():
    # labels [0,0,1,1,2,2], preds [0,1,1,1,2,0]:
    # class 0: tp 1, fp 1, fn 1 -> 2/4 = 1/2; class 1: tp 2, fp 1, fn 0 -> 4/5;
    # class 2: tp 1, fp 0, fn 1 -> 2/3; mean = (15 + 24 + 20) / 90 = 59/90.
    assert macro_f1([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(59 / 90)
    # A class only ever predicted counts with F1 0: labels all "a", preds a,b -> (2/3 + 0) / 2.
    assert macro_f1(["a", "b"], ["a", "a"]) == pytest.approx(1 / 3)
    assert macro_f1([1, 0], [1, 0]) == 1.0


def test_compute_metric_dispatch():
    assert compute_metric("accuracy", [1, 0], [1, 1]) == 0.5
    assert compute_metric("macro_f1", [0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(59 / 90)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metric("bleu", [1], [1])
