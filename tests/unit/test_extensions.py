"""Code of a user's own, from a module outside the package (``tests/outside_package/my_mezo_extension.py``):
a grader type registered with one call and read by ``parse_grader`` like a built-in one (inside
``multi`` too), every bad registration refused with what to fix, and the module loaded by name or
through an entry point of the group ``sglang_mezo.extensions`` by ``load_extensions``, which the CLI
runs before it builds the run spec."""

from __future__ import annotations

import json
import sys
from abc import ABC
from pathlib import Path

import pytest

from sglang.srt.mezo import extensions
from sglang.srt.mezo.cli.train import build_parser
from sglang.srt.mezo.cli.train import main as cli_main
from sglang.srt.mezo.data.graders import (
    Grader,
    GraderError,
    Sample,
    grader_types,
    parse_grader,
    register_grader,
    unregister_grader,
)
from sglang.srt.mezo.errors import ExtensionError
from sglang.srt.mezo.extensions import ENTRY_POINT_GROUP, load_extensions
from sglang.srt.mezo.server.settings import ServerSettings

OUTSIDE = Path(__file__).resolve().parents[1] / "outside_package"
MODULE = "my_mezo_extension"
WORDS = {"type": "word_count", "name": "words", "input": "{{sample.output_text}}", "max_words": 4}
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}


def _dist_info(root: Path, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata finds it on sys.path: its .dist-info folder."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


# ---------------------------------------------------------------- a registered grader type
def test_a_grader_registered_by_the_outside_module_parses_scores_and_round_trips(fresh):
    assert "word_count" not in grader_types()
    assert load_extensions([MODULE]) == [MODULE]
    assert grader_types() == ("string_check", "text_similarity", "multi", "external", "word_count")
    grader = parse_grader(WORDS)
    assert type(grader).__module__ == MODULE and grader.name == "words"
    assert [grader.score({}, Sample(text)) for text in ("", "one", "one two three", "a b c d e f")] == \
        [0.0, 0.25, 0.75, 1.0]
    assert parse_grader(grader.to_dict()).to_dict() == grader.to_dict() == WORDS
    by_row = parse_grader({"type": "word_count", "input": "{{item.answer}}"})  # max_words defaults to 10
    assert by_row.name == "word_count" and by_row.score({"answer": "a b"}, Sample("ignored")) == 0.2
    assert by_row.item_fields() == {"answer"}
    with pytest.raises(GraderError, match=r"item\.answer.*train\.jsonl, line 2"):
        by_row.check_item({"city": "Paris"}, "train.jsonl, line 2")
    # Its fields are checked as the built-in types' are, with their JSON path.
    for bad, param in (({**WORDS, "max_words": 0}, "grader.max_words"), ({**WORDS, "max_word": 3}, "grader.max_word"),
                       ({**WORDS, "input": "{{sample.output_json}}"}, "grader.input")):
        with pytest.raises(GraderError) as e:
            parse_grader(bad)
        assert e.value.param == param and "'words'" in e.value.message


def test_a_registered_type_nests_in_a_multi_grader(fresh):
    load_extensions([MODULE])
    both = parse_grader({"type": "multi", "name": "both", "graders": {"words": WORDS, "exact": EXACT},
                         "calculate_output": "0.5 * words + 0.5 * exact"})
    assert both.score({"answer": "a b"}, Sample("a b")) == pytest.approx(0.75)
    assert both.sub_scores({"answer": "x"}, Sample("a b c d")) == {"words": 1.0, "exact": 0.0}
    assert parse_grader(both.to_dict()).to_dict() == both.to_dict()
    nested = {"type": "multi", "graders": {"inner": {"type": "multi", "graders": {"w": {**WORDS, "max_words": -1}},
                                                      "calculate_output": "w"}}, "calculate_output": "inner"}
    with pytest.raises(GraderError, match="max_words is -1") as e:
        parse_grader(nested)
    assert e.value.param == "grader.graders.inner.graders.w.max_words"


def test_unknown_types_are_refused_listing_the_registered_ones(fresh):
    with pytest.raises(GraderError, match=r"'word_count' is not a grader type; the supported types are string_check, "
                                          r"text_similarity, multi, external \(a type of your own is added with register_grader"):
        parse_grader(WORDS)
    load_extensions([MODULE])
    with pytest.raises(GraderError, match=r"'word_counts' is not a grader type; the supported types are string_check, "
                                          r"text_similarity, multi, external, word_count$") as e:
        parse_grader({**WORDS, "type": "word_counts"})
    assert e.value.param == "grader.type"
    with pytest.raises(GraderError, match=r"grader\.type is missing; give one of .*multi, external, word_count"):
        parse_grader({"name": "x"})
    # OpenAI's python type stays refused (a request's code); the message says what an operator can do instead.
    with pytest.raises(GraderError, match=r"sandbox.*string_check, text_similarity, multi, external or word_count.*"
                                          r"register_grader, --mezo-extensions"):
        parse_grader({"type": "python", "source": "def grade(s, i): return 1"})


# ---------------------------------------------------------------- bad registrations
class _Counts(Grader):
    type = "counts"

    def score(self, item, sample):
        return 1.0

    def to_dict(self):
        return {"type": self.type, "name": self.name}

    @classmethod
    def from_object(cls, obj, where):
        return cls(obj.get("name", "counts"))


class _NoScore(Grader):
    type = "no_score"

    def to_dict(self):
        return {"type": self.type, "name": self.name}

    @classmethod
    def from_object(cls, obj, where):
        return cls("x")


class _NotAGrader(ABC):
    @classmethod
    def from_object(cls, obj, where):
        return cls()


def _parse_counts(obj, where):
    return _Counts("c")


@pytest.mark.parametrize("name, parse, error, match", [
    (3, _parse_counts, TypeError, r"a grader type's name is a string such as 'word_count', got int 3"),
    ("", _parse_counts, ValueError, r"non-empty string"),
    (" counts", _parse_counts, ValueError, r"without surrounding spaces.*got ' counts'"),
    ("multi", _parse_counts, ValueError, r"'multi' is a built-in type; register yours under a name of its own"),
    ("string_check", _parse_counts, ValueError, r"built-in type"),
    ("python", _parse_counts, ValueError, r"'python' is OpenAI's, whose objects carry Python source.*your installed "
                                          r"code.*'my_python'"),
    ("score_model", _parse_counts, ValueError, r"judge model"),
    ("counts", "not a function", TypeError, r"takes a function parse\(obj, where\) -> Grader, got str"),
    ("counts", _Counts, TypeError, r"not the class _Counts: give _Counts\.from_object"),
    ("counts", lambda obj: None, TypeError, r"called as parse\(obj, where\).*cannot take: too many positional"),
    ("no_score", _NoScore.from_object, TypeError, r"_NoScore does not define score; a Grader defines score\(item, "
                                                  r"sample\) -> float .* and to_dict\(\) -> dict"),
    ("not_a_grader", _NotAGrader.from_object, TypeError, r"_NotAGrader is not a subclass of .*Grader"),
    ("count", _Counts.from_object, TypeError, r"_Counts\.type is 'counts'; set type = 'count' on the class"),
])
def test_bad_registrations_say_what_to_fix(fresh, name, parse, error, match):
    with pytest.raises(error, match=match):
        register_grader(name, parse)
    assert grader_types() == ("string_check", "text_similarity", "multi", "external")


def test_a_name_taken_by_another_parse_is_refused_the_same_parse_again_is_not(fresh):
    register_grader("counts", _Counts.from_object)
    register_grader("counts", _Counts.from_object)  # a module imported twice registers again: no error
    with pytest.raises(ValueError, match=r"'counts' is already registered by .*_Counts\.from_object; register "
                                         r".*_parse_counts under another name, or unregister_grader\('counts'\)"):
        register_grader("counts", _parse_counts)
    unregister_grader("counts")
    register_grader("counts", _parse_counts)
    assert parse_grader({"type": "counts"}).name == "c"
    with pytest.raises(ValueError, match=r"'nothing' was not registered; the registered types are counts"):
        unregister_grader("nothing")


def test_what_a_registered_parse_returns_or_raises_is_checked(fresh):
    class Abstract(Grader):
        type = "abstract"

        def to_dict(self):
            return {}

    class Other(_Counts):
        type = "other"

    for name, parse, error, match in (
            ("gives_none", lambda obj, where: None, TypeError, r"returned NoneType, not a Grader"),
            ("missing_method", lambda obj, where: Abstract("a"), TypeError,
             r"'missing_method' \(.*<lambda>\): Can't instantiate abstract class Abstract.*A Grader defines "
             r"score\(item, sample\) -> float and to_dict\(\) -> dict"),
            ("wrong_type", lambda obj, where: Other("o"), TypeError, r"whose type is 'other'; set type = 'wrong_type'"),
            ("raises_value", lambda obj, where: int(obj["size"]), GraderError,
             r"grader 'raises_value': grader is not a valid raises_value grader: invalid literal"),
            ("raises_key", lambda obj, where: obj["size"], GraderError, r"not a valid raises_key grader: KeyError 'size'")):
        register_grader(name, parse)
        with pytest.raises(error, match=match):
            parse_grader({"type": name, "size": "big"} if name == "raises_value" else {"type": name})


# ---------------------------------------------------------------- loading extensions
def test_a_module_is_loaded_once_and_a_failing_import_names_it(fresh, tmp_path, monkeypatch):
    assert load_extensions(MODULE) == [MODULE]  # one name, not its letters
    first = sys.modules[MODULE]
    assert load_extensions([MODULE, MODULE]) == [MODULE] and sys.modules[MODULE] is first
    with pytest.raises(ExtensionError, match=r"extension module 'no_such_module' was not found: put the folder that "
                                             r"holds no_such_module\.py .* on PYTHONPATH, or pip install"):
        load_extensions(["no_such_module"])
    with pytest.raises(ExtensionError, match=r"'no_such_pkg\.graders' was not found"):
        load_extensions(["no_such_pkg.graders"])
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "needs_a_dep.py").write_text("import not_installed_dep\n")
    with pytest.raises(ExtensionError, match=r"'needs_a_dep' imports 'not_installed_dep', which is not installed"):
        load_extensions(["needs_a_dep"])
    # A registration refused while the module is imported: the module and the reason.
    (tmp_path / "takes_multi.py").write_text(
        "from sglang.srt.mezo.data.graders import register_grader\n"
        "register_grader('multi', lambda obj, where: None)\n")
    with pytest.raises(ExtensionError, match=r"'takes_multi' failed while it was imported: ValueError: grader type "
                                             r"'multi' is a built-in type") as e:
        load_extensions(["takes_multi"])
    assert isinstance(e.value, ImportError) and e.value.name == "takes_multi"
    with pytest.raises(ExtensionError, match="dotted name"):
        load_extensions([""])
    assert "takes_multi" not in extensions._loaded  # a failed module is tried again next time


def test_entry_points_are_loaded_always_and_once(fresh, tmp_path, monkeypatch):
    (tmp_path / "ep_target.py").write_text("CALLS = []\n\ndef register():\n    CALLS.append(1)\n")
    _dist_info(tmp_path, "my_graders_dist", f"[{ENTRY_POINT_GROUP}]\nwords = {MODULE}\nhook = ep_target:register\n"
                                            "\n[some.other.group]\nnot_ours = no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ep_target", raising=False)
    assert load_extensions() == [MODULE, "ep_target:register"]
    assert "word_count" in grader_types() and sys.modules["ep_target"].CALLS == [1]
    assert load_extensions([MODULE]) == [MODULE, "ep_target:register"]  # named too: still once
    assert sys.modules["ep_target"].CALLS == [1]
    # The server's settings load the same (the HTTP and the scheduler process call this).
    assert ServerSettings(output_dir=str(tmp_path), extensions=(MODULE,)).load_extensions() == \
        [MODULE, "ep_target:register"]
    assert ServerSettings.from_dict(ServerSettings(output_dir="o", extensions=(MODULE,)).to_dict()).extensions == \
        (MODULE,)
    sys.modules.pop("ep_target", None)


def test_a_bad_entry_point_is_named(fresh, tmp_path, monkeypatch):
    (tmp_path / "ep_bad.py").write_text("VALUE = 3\n")
    _dist_info(tmp_path, "bad_dist", f"[{ENTRY_POINT_GROUP}]\nbroken = ep_bad:nothing_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ExtensionError, match=r"extension entry point 'broken' \(group sglang_mezo\.extensions, "
                                             r"'ep_bad:nothing_here'\): ep_bad has no 'nothing_here'"):
        load_extensions()
    sys.modules.pop("ep_bad", None)


# ---------------------------------------------------------------- the CLI: --extension before the spec
def test_the_cli_loads_extensions_before_it_builds_the_spec(fresh, tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "answer": "a b"}) + "\n")
    # A grader the registered type refuses (max_words 0): the spec is checked before any model
    # loads, so the exit is immediate, and the message is the custom type's own.
    argv = ["--task", "reinforcement", "--train-file", str(train), "--output-dir", str(tmp_path / "out"),
            "--grader", json.dumps({**WORDS, "max_words": 0})]
    assert cli_main(argv) == 2
    assert "'word_count' is not a grader type" in capsys.readouterr().err
    assert cli_main(["--extension", MODULE, *argv]) == 2
    err = capsys.readouterr().err
    assert "grader 'words': grader.max_words is 0; give a whole number >= 1" in err, err
    assert cli_main(["--extension", "no_such_module", *argv]) == 2
    assert "error: extension module 'no_such_module' was not found" in capsys.readouterr().err
    assert "--extension MODULE" in build_parser().format_help()
