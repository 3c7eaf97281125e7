"""The graders in OpenAI's JSON shapes (data/graders): each string_check operation, each
text_similarity metric against a direct call of its library, multi formulas, the refused types and
fields, and the errors' field paths."""

from __future__ import annotations

import pytest
import sacrebleu
from nltk.translate.gleu_score import sentence_gleu
from nltk.translate.meteor_score import meteor_score
from rapidfuzz import fuzz
from rouge_score import rouge_scorer

from sglang.srt.mezo.data.graders import SUPPORTED_TYPES, GraderError, Sample, Template, parse_grader
from sglang.srt.mezo.data.graders.text_similarity import wordnet_available
from sglang.srt.mezo.data.metrics import squad_f1

OUT = "{{sample.output_text}}"


def check(operation: str, reference: str = "{{item.answer}}", **extra) -> dict:
    return {"type": "string_check", "name": "check", "input": OUT, "reference": reference, "operation": operation,
            **extra}


def similarity(metric: str, reference: str = "{{item.answer}}", **extra) -> dict:
    return {"type": "text_similarity", "name": "sim", "input": OUT, "reference": reference,
            "evaluation_metric": metric, **extra}


def score(grader: dict, output_text: str, /, **item) -> float:
    return parse_grader(grader).score(item, Sample(output_text))




# ---------------------------------------------------------------- string_check
@pytest.mark.parametrize("operation, answer, reference, expected", [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0), ("eq", "Paris.", "Paris", 0.0),
    ("ne", "Lyon", "Paris", 1.0), ("ne", "Paris", "Paris", 0.0), ("ne", "paris", "Paris", 1.0),
    ("like", "It is Paris.", "Paris", 1.0), ("like", "It is paris.", "Paris", 0.0), ("like", "Par", "Paris", 0.0),
    ("ilike", "It is PARIS.", "paris", 1.0), ("ilike", "It is Lyon.", "paris", 0.0),
])
def test_string_check_operations(operation, answer, reference, expected):
    assert score(check(operation), answer, answer=reference) == expected


@pytest.mark.parametrize("operation, answer, expected", [
    ("eq", "Broncos", 1.0), ("eq", "broncos", 0.0),
    ("ne", "Broncos", 0.0), ("ne", "Panthers", 1.0),  # ne passes only if no accepted answer is equal
    ("like", "the Denver Broncos", 1.0), ("like", "Panthers", 0.0),
    ("ilike", "THE BRONCOS", 1.0), ("ilike", "Panthers", 0.0),
])
def test_string_check_with_a_list_of_references(operation, answer, expected):
    assert score(check(operation, "{{item.answers}}"), answer, answers=["Denver Broncos", "Broncos"]) == expected


def test_a_reference_mixing_text_and_a_list_renders_the_list_as_json():
    # Only a template that is exactly one placeholder gives several options.
    grader = check("eq", "answers: {{item.answers}}")
    assert score(grader, 'answers: ["a", "b"]', answers=["a", "b"]) == 1.0
    assert score(check("eq"), "3", answer=3) == 1.0 and score(check("eq"), "true", answer=True) == 1.0


# ---------------------------------------------------------------- text_similarity against the libraries
HYP = "the cat sat on the mat today"
REF = "a cat sat on a mat"


@pytest.mark.parametrize("metric, expected", [
    ("fuzzy_match", fuzz.ratio(HYP, REF) / 100),
    ("bleu", sacrebleu.sentence_bleu(HYP, [REF]).score / 100),
    ("gleu", sentence_gleu([REF.split()], HYP.split())),
])
def test_text_similarity_is_the_library_call(metric, expected):
    assert score(similarity(metric), HYP, answer=REF) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected < 1.0


def test_bleu_and_gleu_see_which_side_is_the_reference():
    """Swapping input and reference changes BLEU (brevity penalty) and GLEU: the arguments' order is checked."""
    short, long = "the cat", "the cat sat on the mat"
    assert score(similarity("bleu"), short, answer=long) == pytest.approx(sacrebleu.sentence_bleu(short, [long]).score
                                                                           / 100)
    assert sacrebleu.sentence_bleu(short, [long]).score != sacrebleu.sentence_bleu(long, [short]).score
    hyp, ref = "the cat sat", "the cat sat on the mat"
    assert score(similarity("gleu"), hyp, answer=ref) == pytest.approx(sentence_gleu([ref.split()], hyp.split()))


@pytest.mark.parametrize("metric, key", [("rouge_1", "rouge1"), ("rouge_2", "rouge2"), ("rouge_3", "rouge3"),
                                         ("rouge_4", "rouge4"), ("rouge_5", "rouge5"), ("rouge_l", "rougeL")])
def test_rouge_is_rouge_scores_fmeasure(metric, key):
    hyp = "one two three four five six seven eight"
    ref = "zero one two three four five six seven eight nine ten eleven"
    result = rouge_scorer.RougeScorer([key]).score(ref, hyp)[key]
    assert result.precision != result.recall  # asymmetric: precision or recall would be told apart
    got = score(similarity(metric), hyp, answer=ref)
    assert got == pytest.approx(result.fmeasure)
    assert got != pytest.approx(result.precision) and got != pytest.approx(result.recall)


def test_squad_f1_is_the_metrics_module_over_every_answer():
    answers = ["Denver Broncos", "Broncos", "the Denver team"]
    for hyp in ("The Denver Broncos won", "Denver", "Panthers", ""):
        assert score(similarity("squad_f1", "{{item.answers}}"), hyp, answers=answers) == squad_f1(hyp, answers)
    assert score(similarity("squad_f1"), "Denver", answer="Denver Broncos") == squad_f1("Denver", ["Denver Broncos"])


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "rouge_l"])
def test_several_references_take_the_best(metric):
    answers = ["completely different words", "the cat sat on the mat", "a cat"]
    one = [score(similarity(metric), "the cat sat on a mat", answer=a) for a in answers]
    best = score(similarity(metric, "{{item.answers}}"), "the cat sat on a mat", answers=answers)
    assert best == max(one) and len(set(one)) == 3


def test_pass_threshold_is_kept_and_must_be_a_number():
    grader = parse_grader(similarity("fuzzy_match", pass_threshold=0.8))
    assert grader.pass_threshold == 0.8 and grader.to_dict()["pass_threshold"] == 0.8
    with pytest.raises(GraderError, match=r"grader\.pass_threshold is \"high\", expected a number") as e:
        parse_grader(similarity("fuzzy_match", pass_threshold="high"))
    assert e.value.param == "grader.pass_threshold"


def test_cosine_is_refused_with_other_metrics_to_use():
    with pytest.raises(GraderError, match=r"cosine.*embedding model.*fuzzy_match, rouge_l or squad_f1") as e:
        parse_grader(similarity("cosine"))
    assert e.value.param == "grader.evaluation_metric"


@pytest.mark.skipif(wordnet_available(), reason="this machine has WordNet, so METEOR is offered")
def test_meteor_without_wordnet_is_refused_at_parse():
    with pytest.raises(GraderError, match=r"meteor.*WordNet.*lacks.*python -m nltk\.downloader wordnet.*fuzzy_match"):
        parse_grader(similarity("meteor"))


@pytest.mark.skipif(not wordnet_available(), reason="METEOR needs NLTK's WordNet corpus")
def test_meteor_is_nltks():
    assert score(similarity("meteor"), HYP, answer=REF) == pytest.approx(meteor_score([REF.split()], HYP.split()))


def test_unknown_metric_lists_the_metrics():
    with pytest.raises(GraderError, match=r"'rouge_9'.*fuzzy_match, bleu, gleu, meteor, rouge_1.*squad_f1"):
        parse_grader(similarity("rouge_9"))


# ---------------------------------------------------------------- multi
FUZZY = similarity("fuzzy_match")
HAS = check("ilike")


def test_multi_combines_its_sub_scores_by_the_formula():
    grader = parse_grader({"type": "multi", "name": "both", "graders": {"close": FUZZY, "has": HAS},
                           "calculate_output": "0.5 * close + 0.5 * max(has, 0.2) - abs(-0.1)"})
    item, sample = {"answer": "Paris"}, Sample("paris!")
    close = fuzz.ratio("paris!", "Paris") / 100
    assert grader.sub_scores(item, sample) == {"close": pytest.approx(close), "has": 1.0}
    assert grader.score(item, sample) == pytest.approx(0.5 * close + 0.5 - 0.1)
    assert isinstance(grader.score(item, sample), float)
    cond = parse_grader({"type": "multi", "graders": {"close": FUZZY, "has": HAS},
                         "calculate_output": "round(close, 1) if has >= 1 else 0"})
    assert cond.score(item, sample) == round(close, 1) and cond.score(item, Sample("Lyon")) == 0.0
    assert cond.name == "multi"  # name is optional: the type stands in


@pytest.mark.parametrize("formula, match", [
    ("0.5 * close +", r"'0\.5 \* close \+'.*not a formula"),
    ("0.5 * close + 0.5 * exact", r"unknown name 'exact'.*close, has"),
    ("close.real", r"Attribute is not allowed"),
    ("'a'", r"'a' is not a number"),
    ("__import__('os')", r"unknown name '__import__'"),
    ("sum([close, has])", r"unknown name 'sum'"),
    ("close(1)", r"only min, max, abs, round can be called"),
    ("min()", r"cannot be evaluated"),
    ("close; has", r"one expression"),
    ("close | has", r"BitOr is not allowed"),
])
def test_multi_refuses_a_bad_formula_when_parsed(formula, match):
    with pytest.raises(GraderError, match=match) as e:
        parse_grader({"type": "multi", "graders": {"close": FUZZY, "has": HAS}, "calculate_output": formula})
    assert e.value.param == "grader.calculate_output"


def test_multi_division_by_zero_is_reported_when_scored():
    grader = parse_grader({"type": "multi", "graders": {"has": HAS}, "calculate_output": "1 / has"})
    assert grader.score({"answer": "a"}, Sample("a")) == 1.0
    with pytest.raises(GraderError, match=r"'1 / has'.*'has': 0\.0.*ZeroDivisionError"):
        grader.score({"answer": "a"}, Sample("b"))


def test_nested_multi_reports_the_full_path():
    inner = {"type": "multi", "graders": {"exact": check("equals")}, "calculate_output": "exact"}
    with pytest.raises(GraderError, match=r"grader\.graders\.inner\.graders\.exact\.operation is 'equals'") as e:
        parse_grader({"type": "multi", "graders": {"inner": inner}, "calculate_output": "inner"})
    assert e.value.param == "grader.graders.inner.graders.exact.operation"
    bad_formula = {"type": "multi", "graders": {"a": HAS}, "calculate_output": "b"}
    with pytest.raises(GraderError) as e:
        parse_grader({"type": "multi", "graders": {"inner": bad_formula}, "calculate_output": "inner"})
    assert e.value.param == "grader.graders.inner.calculate_output"
    missing = {"type": "text_similarity", "input": OUT, "evaluation_metric": "squad_f1"}
    with pytest.raises(GraderError, match=r"grader\.graders\.f1\.reference is missing") as e:
        parse_grader({"type": "multi", "graders": {"f1": missing}, "calculate_output": "f1"})
    assert e.value.param == "grader.graders.f1.reference"


def test_multi_item_fields_and_check_item_cover_the_sub_graders():
    grader = parse_grader({"type": "multi", "graders": {
        "f1": similarity("squad_f1", "{{item.answers}}"),
        "inner": {"type": "multi", "graders": {"has": check("like", "{{ item.meta.keyword }}")},
                  "calculate_output": "has"}}, "calculate_output": "0.5 * f1 + 0.5 * inner"})
    assert grader.item_fields() == {"answers", "meta.keyword"}
    grader.check_item({"answers": ["a"], "meta": {"keyword": "a"}}, "train.jsonl, line 1")
    with pytest.raises(GraderError, match=r"item\.meta\.keyword.*train\.jsonl, line 2.*Add the field"):
        grader.check_item({"answers": ["a"], "meta": {}}, "train.jsonl, line 2")
    with pytest.raises(GraderError, match=r"item\.meta\.keyword, but in the item \(train\.jsonl, line 3\) "
                                          r"item\.meta is str, not an object"):
        grader.check_item({"answers": ["a"], "meta": "a"}, "train.jsonl, line 3")


@pytest.mark.parametrize("graders, match", [
    ({}, r"grader\.graders is empty"),
    ({"exact-match": HAS}, r"key 'exact-match' cannot be named"),
    ({"min": HAS}, r"key 'min' cannot be named"),
])
def test_multi_graders_must_be_usable_keys(graders, match):
    with pytest.raises(GraderError, match=match):
        parse_grader({"type": "multi", "graders": graders, "calculate_output": "1"})


# ---------------------------------------------------------------- refused types and fields
@pytest.mark.parametrize("obj, match", [
    ({"type": "score_model", "name": "judge", "model": "gpt-4o", "input": []}, r"'judge'.*judge model"),
    ({"type": "label_model", "model": "gpt-4o", "labels": ["a"]}, r"label_model.*judge model.*runs no second one"),
    ({"type": "python", "source": "def grade(s, i): return 1"}, r"'python'.*user's Python code.*sandbox"),
    ({"type": "regex"}, r"'regex' is not a grader type.*string_check, text_similarity, multi"),
    ({"name": "x"}, r"grader\.type is missing"),
    ({"type": 3}, r"grader\.type is 3, not a string"),
])
def test_refused_types(obj, match):
    with pytest.raises(GraderError, match=match) as e:
        parse_grader(obj)
    assert e.value.param == "grader.type"


def test_supported_types():
    assert SUPPORTED_TYPES == ("string_check", "text_similarity", "multi", "external")


@pytest.mark.parametrize("obj, param, match", [
    ("string_check", "grader", r"grader is str, expected a grader object"),
    (check("eq", name=3), "grader.name", r"grader\.name is 3, expected a string"),
    ({**check("eq"), "input": ["a"]}, "grader.input", r"grader\.input is \[\"a\"\], expected a string"),
    ({k: v for k, v in check("eq").items() if k != "operation"}, "grader.operation", r"grader\.operation is missing"),
    (check("eq", refrence="x"), "grader.refrence", r"grader\.refrence is not a field.*input, name, operation"),
    (check("eq", "{{sample.output_json}}"), "grader.reference", r"sample\.output_json.*supported.*sample\.output_text"),
    (check("eq", "{{sample.foo}}"), "grader.reference", r"sample\.foo.*not supported"),
    (check("eq", "{{ foo.bar }}"), "grader.reference", r"foo\.bar.*item\.<field>"),
    (check("eq", "{{item}}"), "grader.reference", r"\{\{item\}\}.*not supported"),
])
def test_bad_fields_name_their_path(obj, param, match):
    with pytest.raises(GraderError, match=match) as e:
        parse_grader(obj)
    assert e.value.param == param


def test_a_missing_field_names_the_grader_the_field_and_where():
    grader = parse_grader(similarity("fuzzy_match", "{{item.meta.answer}}", name="close"))
    with pytest.raises(GraderError, match=r"'close'.*item\.meta\.answer.*train\.jsonl, line 3") as e:
        grader.check_item({"answer": "x"}, "train.jsonl, line 3")
    assert e.value.param == "grader.reference"
    with pytest.raises(GraderError, match=r"'close'.*item\.meta\.answer"):
        grader.score({"meta": {"question": "q"}}, Sample("x"))
    template = Template("{{item.answer}}", param="grader.reference", grader="close")
    with pytest.raises(GraderError, match=r"'close'.*item\.answer.*dev\.jsonl, line 7"):
        template.render({}, Sample("x"), where="dev.jsonl, line 7")
    with pytest.raises(GraderError, match=r"item\.answers, an empty list.*train\.jsonl, line 1"):
        parse_grader(check("eq", "{{item.answers}}")).check_item({"answers": []}, "train.jsonl, line 1")
    with pytest.raises(GraderError, match=r"the item \(train\.jsonl, line 4\) is list"):
        grader.check_item(["x"], "train.jsonl, line 4")


def test_templates_render_values_and_nested_paths():
    t = Template("{{item.q}} / {{ item.meta.n }} / {{item.meta.flag}} / {{item.tags}} / {{sample.output_text}}")
    assert t.fields == {"q", "meta.n", "meta.flag", "tags"}
    item = {"q": "Q?", "meta": {"n": 2.5, "flag": False}, "tags": {"a": [1, 2]}}
    assert t.render(item, Sample("A")) == 'Q? / 2.5 / false / {"a": [1, 2]} / A'
    assert t.render_options(item, Sample("A")) == [t.render(item, Sample("A"))]
    assert Template("{{item.answers}}").render_options({"answers": ["x", "y"]}, Sample("")) == ["x", "y"]
    assert Template("{{item.answers}}").render_options({"answers": [1, 2]}, Sample("")) == ["[1, 2]"]


@pytest.mark.parametrize("obj", [
    check("ilike", "{{item.answers}}"),
    similarity("rouge_l", "{{item.answers}}", pass_threshold=0.5),
    {"type": "multi", "name": "mix", "graders": {"close": similarity("bleu"), "inner": {
        "type": "multi", "graders": {"has": check("like")}, "calculate_output": "has"}},
     "calculate_output": "min(close + inner, 1)"},
])
def test_to_dict_round_trips(obj):
    grader = parse_grader(obj)
    again = parse_grader(grader.to_dict())
    assert again.to_dict() == grader.to_dict()
    item = {"answer": "the cat sat", "answers": ["the cat sat", "a dog"]}
    for answer in ("the cat sat on the mat", "a dog", "nothing alike"):
        assert again.score(item, Sample(answer)) == grader.score(item, Sample(answer))


def test_to_dict_fills_in_the_name():
    obj = {k: v for k, v in check("eq").items() if k != "name"}
    assert parse_grader(obj).to_dict() == {**obj, "name": "string_check"}
