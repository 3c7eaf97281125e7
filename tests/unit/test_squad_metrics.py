"""SQuAD's exact match and F1 (sglang.srt.mezo.data.metrics), on cases worked by SQuAD v1.1's
official evaluate-v1.1.py."""

from __future__ import annotations

import pytest

from sglang.srt.mezo.data.metrics import normalize_answer, squad_exact_match, squad_f1, squad_scores


@pytest.mark.parametrize("text, normalized", [
    ("The Denver Broncos", "denver broncos"),
    ("  a   cat,  an apple and THE dog. ", "cat apple and dog"),
    ("Saint-Denis", "saintdenis"),          # punctuation is removed, not turned into a space
    ("theatre", "theatre"),                 # articles only as whole words
    ("the-end", "theend"),                  # punctuation goes first, so this "the" is no longer a word
    ("1,000 (approx.)", "1000 approx"),
    ("", ""),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_takes_the_best_reference():
    assert squad_exact_match("Denver Broncos", ["Denver Broncos", "The Broncos"]) == 1.0
    assert squad_exact_match("the broncos!", ["Denver Broncos", "Broncos"]) == 1.0
    assert squad_exact_match("Broncos team", ["Denver Broncos"]) == 0.0


def test_f1_bag_of_tokens():
    assert squad_f1("Denver Broncos", ["Denver Broncos"]) == 1.0
    assert squad_f1("Broncos Denver", ["Denver Broncos"]) == 1.0    # a bag, order does not matter
    assert squad_f1("the Broncos", ["Denver Broncos"]) == pytest.approx(2 / 3)  # p 1, r 1/2
    assert squad_f1("Denver Denver", ["Denver Broncos"]) == pytest.approx(0.5)  # counts clipped: p 1/2, r 1/2
    assert squad_f1("Carolina Panthers", ["Denver Broncos"]) == 0.0
    assert squad_f1("the", ["Denver Broncos"]) == 0.0                # empty after normalisation: 0, as in v1.1
    assert squad_f1("Broncos", ["Denver Broncos", "Broncos"]) == 1.0  # the max over references


def test_scores_are_percent_means():
    scores = squad_scores(["Denver Broncos", "the Broncos", "Panthers"],
                          [["Denver Broncos"], ["Denver Broncos", "Broncos"], ["Carolina Panthers"]])
    assert scores["eval_exact_match"] == pytest.approx(100 * 2 / 3)
    assert scores["eval_f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
    assert set(scores) == {"eval_f1", "eval_exact_match"}


def test_bad_inputs():
    with pytest.raises(ValueError, match="non-zero"):
        squad_scores(["a"], [])
    with pytest.raises(ValueError, match="non-empty list"):
        squad_f1("a", "a")  # a bare string would be scored per character
    with pytest.raises(ValueError, match="non-empty list"):
        squad_exact_match("a", [])
