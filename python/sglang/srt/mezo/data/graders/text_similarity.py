"""OpenAI's ``text_similarity`` grader: how close the rendered ``input`` is to ``reference``, in [0, 1].

Every metric is its library's own computation, called as OpenAI names it:

- ``fuzzy_match``: ``rapidfuzz.fuzz.ratio(input, reference) / 100`` (normalised Indel similarity);
- ``bleu``: ``sacrebleu.sentence_bleu(input, [reference]).score / 100``;
- ``gleu``: NLTK's ``sentence_gleu([reference.split()], input.split())``;
- ``meteor``: NLTK's ``meteor_score([reference.split()], input.split())``, which needs NLTK's WordNet corpus;
- ``rouge_1`` ... ``rouge_5``, ``rouge_l``: ``rouge_score``'s F-measure of ``RougeScorer.score(reference, input)``;
- ``squad_f1``, this project's own (not OpenAI's): SQuAD v1.1's token F1 after its normalisation
  (:func:`sglang.srt.mezo.data.metrics.squad_f1`), the MeZO paper's SQuAD metric.

A reference that is a list of accepted texts (``{{item.answers}}``) scores the best of them.
``cosine`` (it needs an embedding model, which this server does not run) is refused when the grader
is parsed, and so is ``meteor`` on a machine without WordNet.

>>> g = TextSimilarityGrader("f1", Template("{{sample.output_text}}"), Template("{{item.answers}}"), "squad_f1")
>>> round(g.score({"answers": ["Denver Broncos", "Broncos"]}, Sample("the Denver Broncos won")), 4)
0.8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Callable, Optional

from sglang.srt.mezo.data import metrics
from sglang.srt.mezo.data.graders.base import Grader, Sample, Template, check_keys, read_field, read_name, refuse

# The libraries are imported where a metric first runs (hence each `noqa: PLC0415`): NLTK (and
# rouge_score, which imports it) takes most of a second to import, which a run that never grades
# should not pay; and the data layer's modules import without third-party packages.


def fuzzy_match(text: str, reference: str) -> float:
    """rapidfuzz's ``fuzz.ratio`` in [0, 1]."""
    from rapidfuzz import fuzz  # noqa: PLC0415

    return fuzz.ratio(text, reference) / 100


def bleu(text: str, reference: str) -> float:
    """sacrebleu's sentence BLEU (its default tokenizer and smoothing) in [0, 1]."""
    import sacrebleu  # noqa: PLC0415

    return sacrebleu.sentence_bleu(text, [reference]).score / 100


def gleu(text: str, reference: str) -> float:
    """NLTK's sentence GLEU over whitespace tokens."""
    from nltk.translate.gleu_score import sentence_gleu  # noqa: PLC0415

    return sentence_gleu([reference.split()], text.split())


def meteor(text: str, reference: str) -> float:
    """NLTK's METEOR over whitespace tokens (its synonym stage reads WordNet)."""
    from nltk.translate.meteor_score import meteor_score  # noqa: PLC0415

    return meteor_score([reference.split()], text.split())


@lru_cache(maxsize=None)
def _rouge_scorer(rouge_type: str):
    # One scorer per ROUGE type, built once: a scorer sets up its tokenizer when made.
    from rouge_score import rouge_scorer  # noqa: PLC0415

    return rouge_scorer.RougeScorer([rouge_type])


def _rouge(rouge_type: str) -> Callable[[str, str], float]:
    def score(text: str, reference: str) -> float:
        # rouge_score takes (target, prediction): precision is over the input's n-grams, recall the reference's.
        return _rouge_scorer(rouge_type).score(reference, text)[rouge_type].fmeasure

    score.__name__ = score.__qualname__ = rouge_type
    score.__doc__ = f"rouge_score's {rouge_type} F-measure."
    return score


#: Metric name -> score of (input, one reference text).
METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match,
    "bleu": bleu,
    "gleu": gleu,
    "meteor": meteor,
    **{f"rouge_{n}": _rouge(f"rouge{n}") for n in (1, 2, 3, 4, 5)},
    "rouge_l": _rouge("rougeL"),
}
#: This project's own metric, scored against every accepted text at once.
SQUAD_F1 = "squad_f1"
EVALUATION_METRICS = (*METRICS, SQUAD_F1)
_OTHER_METRICS = "fuzzy_match, rouge_l or squad_f1"


def wordnet_available() -> bool:
    """Whether NLTK finds its WordNet corpus on this machine (METEOR needs it)."""
    import nltk  # noqa: PLC0415

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    return True


class TextSimilarityGrader(Grader):
    """``input`` scored against ``reference`` by ``evaluation_metric`` (one of :data:`EVALUATION_METRICS`).

    ``pass_threshold`` (OpenAI's, optional) is kept with the grader for reports of passing samples;
    the score itself is the metric's value.
    """

    type = "text_similarity"

    def __init__(self, name: str, input: Template, reference: Template, evaluation_metric: str,
                 pass_threshold: Optional[float] = None):
        super().__init__(name)
        if evaluation_metric not in EVALUATION_METRICS:
            raise ValueError(f"evaluation_metric must be one of {', '.join(EVALUATION_METRICS)}, "
                             f"got {evaluation_metric!r}")
        self.input, self.reference = input, reference
        self.evaluation_metric, self.pass_threshold = evaluation_metric, pass_threshold

    def similarity(self, text: str, references: Sequence[str]) -> float:
        """The metric of ``text`` against the best of ``references``."""
        if self.evaluation_metric == SQUAD_F1:
            return metrics.squad_f1(text, list(references))
        metric = METRICS[self.evaluation_metric]
        return max(metric(text, ref) for ref in references)

    def score(self, item: Mapping, sample: Sample) -> float:
        return float(self.similarity(self.input.render(item, sample), self.reference.render_options(item, sample)))

    def templates(self) -> list[Template]:
        return [self.input, self.reference]

    def to_dict(self) -> dict:
        out = {"type": self.type, "name": self.name, "input": self.input.text, "reference": self.reference.text,
               "evaluation_metric": self.evaluation_metric}
        if self.pass_threshold is not None:
            out["pass_threshold"] = self.pass_threshold
        return out


def parse(obj: Mapping[str, Any], where: str) -> TextSimilarityGrader:
    """A :class:`TextSimilarityGrader` from its JSON object; ``where`` is the object's JSON path."""
    name = read_name(obj, where)
    check_keys(obj, where, name, {"input", "reference", "evaluation_metric", "pass_threshold"})
    templates = [Template(read_field(obj, k, where, name), param=f"{where}.{k}", grader=name)
                 for k in ("input", "reference")]
    metric = read_field(obj, "evaluation_metric", where, name)
    param = f"{where}.evaluation_metric"
    if metric == "cosine":
        raise refuse(name, f"{param} 'cosine' is not offered: it compares embeddings, which need an embedding "
                     f"model, and this server runs none besides the one it trains. Use {_OTHER_METRICS}", param)
    if metric == "meteor" and not wordnet_available():
        raise refuse(name, f"{param} 'meteor' needs NLTK's WordNet corpus, which this machine lacks. Install it "
                     "with `python -m nltk.downloader wordnet` on a machine with network access (or copy an "
                     f"nltk_data folder holding corpora/wordnet here), or use {_OTHER_METRICS}", param)
    if metric not in EVALUATION_METRICS:
        raise refuse(name, f"{param} is {metric!r}; use one of {', '.join(EVALUATION_METRICS)} "
                     "(squad_f1 is this project's own: SQuAD's token F1, best over the accepted answers)", param)
    threshold = read_field(obj, "pass_threshold", where, name, (int, float), required=False)
    return TextSimilarityGrader(name, *templates, metric, None if threshold is None else float(threshold))
