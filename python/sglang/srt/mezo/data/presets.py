"""Task presets: each task's template with a ``[MASK]`` slot and its label words, for masked and
causal LMs, and the candidate templates a prompt search chooses among.

>>> task = get_task("SST2")
>>> ex = Example("a gorgeous film .", None, 1)
>>> fill_template(task.mlm_template, ex)
'a gorgeous film . It was [MASK] .'
>>> task.mlm_label_words[ex.label]
'great'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.objective_table import task_rows


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
    #: The objective a run of this task trains with unless told otherwise: "ce" (one-token label
    #: words), "options" (each option's log-likelihood) or "completion" (generated text).
    objective: str = "ce"

    @property
    def generative(self) -> bool:
        """Whether the task's answers are generated text (scored by generating them)."""
        return task_rows(self.objective) == "completions"


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
    # Multiple choice: every example brings its own options (``Example.choices``), each scored by its
    # log-likelihood after the prompt, as the MeZO paper scores COPA.
    TaskPreset("arc-easy", (0, 1, 2, 3), None, None, "Question: <S1>\nAnswer: [MASK]", None, 256, "accuracy",
               False, ("question",), ("allenai/ai2_arc", "ARC-Easy"),
               {"train": "arc_easy/train.jsonl", "dev": "arc_easy/dev.jsonl"}, objective="options"),
    # Generative: rows become prompt/completion pairs (data/generative.py), scored by generating.
    TaskPreset("squad", (), None, None, None, None, 1024, "f1", False, ("context", "question"),
               ("rajpurkar/squad",), {"train": "squad/train.jsonl", "dev": "squad/dev.jsonl"},
               objective="completion"),
    # The user's own chat or prompt/completion file (OpenAI's formats): no data of its own.
    TaskPreset("chat", (), None, None, None, None, 2048, "loss", False, ("messages",), (), {},
               objective="completion"),
    # The user's own preference pairs (OpenAI's dpo rows or TRL's prompt/chosen/rejected).
    TaskPreset("preference", (), None, None, None, None, 2048, "reward accuracy", False, ("input",), (), {},
               objective="dpo"),
    # The user's own reinforcement prompts (OpenAI's rows: chat messages ending with the user's,
    # plus the fields a grader reads).
    TaskPreset("reinforcement", (), None, None, None, None, 2048, "reward", False, ("messages",), (), {},
               objective="reward"),
)}


#: The tasks whose classes are one-token label words at one position (the prompt objective).
LABEL_WORD_TASKS: tuple[str, ...] = tuple(name for name, p in TASKS.items() if task_rows(p.objective) == "labels")


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


def as_preset(task: str | TaskPreset | None) -> TaskPreset | None:
    """``task`` as a preset: a name is looked up (:func:`get_task`), a preset or None passes through."""
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
