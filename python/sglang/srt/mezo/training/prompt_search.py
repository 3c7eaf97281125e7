"""Prompts that start high, found with forward passes only, before MeZO takes a step.

MeZO starts from the prompt it is given, and a small model's zero-shot accuracy swings by 25 points
between reasonable prompts. Three options of the run spec choose the prompt on training data only
(the k-shot train and its k-shot dev split, never the evaluation set):

- ``label_words="auto"`` (LM-BFF, Gao et al. 2021): for each class, the words most likely at the
  mask over that class's training examples are candidates; every assignment of one candidate to
  each class is scored by its accuracy (then cross-entropy) on the training examples, and the best
  few go on, with the preset's words, to the dev split.
- ``template="auto"``: each of the task's candidate templates
  (:func:`~sglang.srt.mezo.data.presets.template_candidates`) with its words is scored on the dev split.
- ``calibrate=True`` (contextual calibration, Zhao et al. 2021): the label words' probabilities
  are divided by theirs on content-free inputs ("N/A", ""), so a prompt's lean towards one word
  does not decide the class. The run keeps that correction in training and evaluation.

All of it costs one forward per example and template: each forward returns the whole vocabulary's
log-probabilities at the read position, and every assignment of words is scored from those rows.

Example (SmolLM2-135M; ``start_run`` does this when the spec asks for it)::

    >>> plan = prepare(MeZOConfig(task="sst-2", template="auto", label_words="auto", calibrate=True))  # doctest: +SKIP
    >>> run = start_run(plan)  # doctest: +SKIP
    >>> plan.prompt_choice.template, plan.prompt_choice.label_words  # doctest: +SKIP
    ('<S1> All in all, it was [MASK]', {'0': 'terrible', '1': 'great'})
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.presets import TaskPreset, template_candidates
from sglang.srt.mezo.data.prompt import PromptEncoder, label_text, label_word_pieces, mask_takes_space

logger = logging.getLogger(__name__)


#: Zhao et al. 2021's content-free inputs for a causal LM (their "[MASK]" would be a second mask
#: token in a masked LM's prompt).
CONTENT_FREE = ("N/A", "")


#: Candidate words a class keeps (LM-BFF's k), capped so that all assignments stay enumerable.
WORDS_PER_CLASS = 30


MAX_ASSIGNMENTS = 50_000


#: Assignments of label words that go on from the training set to the dev split (LM-BFF's n).
ASSIGNMENTS_TO_DEV = 5


_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass
class PromptChoice:
    """The prompt a run uses, what it was chosen from, and on what."""

    template: str
    label_words: dict[str, str]  # label (as text) -> word
    strip_s1_punctuation: bool = False
    calibration: Optional[list[float]] = None  # per label word: log p_cf, subtracted from its logit
    selected_on: str = ""
    candidates: list[dict] = field(default_factory=list)  # every (template, words) scored, best first
    search_time_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PromptChoice":
        return cls(**values)

    def encoder(self, prompt: PromptEncoder) -> PromptEncoder:
        """``prompt`` (tokenizer, kind, labels, max length) with this choice's template and words."""
        words = [self.label_words[label_text(label)] for label in prompt.labels]
        return prompt.with_prompt(self.template, words, self.strip_s1_punctuation)


@dataclass
class _Rows:
    """Vocabulary log-probabilities at the read position, one row per example, and the labels."""

    log_probs: torch.Tensor  # [n, vocab]
    labels: torch.Tensor  # [n] label indices


@torch.no_grad()
def vocabulary_log_probs(trainer, prompt: PromptEncoder, examples: Sequence[Example], chunk: int = 16) -> _Rows:
    """One forward per example through ``trainer`` (its current weights): log-softmax over the whole
    vocabulary at the mask (masked LM) or after the prompt (causal LM)."""
    encoded = prompt.encode_all(examples)
    rows = []
    for start in range(0, len(encoded), chunk):
        part = encoded[start:start + chunk]
        logits = trainer.logits([list(e.input_ids) for e in part], [e.position for e in part], None)
        rows.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return _Rows(torch.cat(rows), torch.tensor([e.label_index for e in encoded]))


def word_token_ids(tokenizer, space_prefix: bool) -> torch.Tensor:
    """Vocabulary entries that are one whole alphabetic word, with a leading space if
    ``space_prefix`` (how a label word after " It was" is spelled), else without."""
    keep = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        word = (text[1:] if text.startswith(" ") else None) if space_prefix else text
        # A chosen word is recorded as text and encoded again: it must come back as this token.
        if word and _WORD.fullmatch(word) and label_word_pieces(tokenizer, word, space_prefix) == [token_id]:
            keep.append(token_id)
    return torch.tensor(keep)


def calibration_bias(content_free: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """log of the mean (over content-free inputs) probability of each label word among the label
    words; subtracting it from the logits divides p by p_cf (Zhao et al. 2021: W = diag(p_cf)^-1).
    ``words`` [..., n_labels] -> [..., n_labels]."""
    return torch.log(torch.softmax(content_free[:, words].double(), dim=-1).mean(0))


def _scores(rows: _Rows, words: torch.Tensor, content_free: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and cross-entropy on ``rows`` of each assignment of label words ``words`` [C, n]."""
    logits = rows.log_probs[:, words].double()  # [N, C, n]
    if content_free is not None:
        logits = logits - calibration_bias(content_free, words)
    log_p = torch.log_softmax(logits, dim=-1)
    target = rows.labels.view(-1, 1, 1).expand(-1, words.shape[0], 1)
    ce = -log_p.gather(-1, target).squeeze(-1).mean(0)
    acc = (log_p.argmax(-1) == rows.labels.view(-1, 1)).double().mean(0)
    return acc, ce


def class_candidates(train: _Rows, vocabulary: torch.Tensor, n_labels: int, per_class: int) -> list[torch.Tensor]:
    """Each class's ``per_class`` words of highest total log-likelihood over its training examples
    (LM-BFF's candidate label words)."""
    out = []
    for c in range(n_labels):
        mine = train.log_probs[train.labels == c][:, vocabulary]
        if mine.shape[0] == 0:
            raise ValueError(f"label_words='auto' needs training examples of every class; class {c} has none")
        out.append(vocabulary[mine.sum(0).topk(min(per_class, vocabulary.numel())).indices])
    return out


def rank_assignments(train: _Rows, candidates: Sequence[torch.Tensor], content_free: Optional[torch.Tensor],
                     keep: int = ASSIGNMENTS_TO_DEV) -> list[tuple[tuple[int, ...], float, float]]:
    """LM-BFF's search: every assignment of distinct words, one from each class's candidates; the
    best ``keep`` by training accuracy, then cross-entropy: ``[(token ids, acc, ce), ...]``."""
    n = len(candidates)
    product = (a for a in itertools.product(*[c.tolist() for c in candidates]) if len(set(a)) == n)
    per_chunk = max(1, 4_000_000 // max(1, train.log_probs.shape[0] * n))
    best: list[tuple[tuple[int, ...], float, float]] = []
    while chunk := list(itertools.islice(product, per_chunk)):
        acc, ce = _scores(train, torch.tensor(chunk), content_free)
        best += [(a, float(x), float(y)) for a, x, y in zip(chunk, acc, ce)]
        best = sorted(best, key=lambda r: (-r[1], r[2]))[:keep]
    return best


def _content_free(prompt: PromptEncoder, template: str) -> list[Example]:
    label = prompt.labels[0]  # any label: encoding needs one, the search reads no label of these
    return [Example(text, text if "<S2>" in template else None, label) for text in CONTENT_FREE]


def _probe(prompt: PromptEncoder, template: str, words: Optional[Sequence[str]], strip: bool,
           vocabulary: torch.Tensor) -> tuple[PromptEncoder, bool]:
    """An encoder for ``template``, and whether ``words`` are one token each after it. Without
    usable words (they are being searched), it encodes with stand-in words from ``vocabulary``."""
    if words is not None:
        try:
            return prompt.with_prompt(template, words, strip), True
        except ValueError:
            pass
    stand_in = [prompt.tokenizer.decode([i]).strip() for i in vocabulary[: len(prompt.labels)].tolist()]
    return prompt.with_prompt(template, stand_in, strip), False


def search_prompt(trainer, prompt: PromptEncoder, preset: TaskPreset, *, template: Optional[str],
                  label_words, calibrate: bool, train: Sequence[Example], dev: Sequence[Example]) -> PromptChoice:
    """Choose a run's prompt with ``trainer``'s forward (its weights as they are: the base model at
    the start of a run).

    ``template``/``label_words`` are the spec's values ("auto", given, or None for the preset's);
    ``prompt`` is the encoder :func:`~sglang.srt.mezo.training.plan.prepare` built, whose template
    and words stand where the spec says "auto". Candidates are scored on ``dev`` (the k-shot dev
    split), or on ``train`` when there is none, by accuracy; ties go to the lower loss there, then
    to the preset's template and words.
    """
    started = time.perf_counter()
    tokenizer, kind, n_labels = prompt.tokenizer, prompt.kind, len(prompt.labels)
    auto_template, auto_words = template == "auto", label_words == "auto"
    if auto_template:
        templates = template_candidates(preset, kind)
        # Templates of the task's own list get its text handling (LM-BFF strips S1's final mark).
        strip = preset.strip_s1_punctuation and kind == "masked"
    else:
        templates, strip = [prompt.template], prompt.strip_s1_punctuation
    given_words = None if auto_words else prompt.label_words
    selection, selected_on = (list(dev), f"the k-shot dev split ({len(dev)} examples)") if dev else \
        (list(train), f"the training examples ({len(train)}; there is no dev split: k_shot=0 or your own data)")
    per_class = min(WORDS_PER_CLASS, max(2, int(MAX_ASSIGNMENTS ** (1 / n_labels))))
    vocabularies: dict[bool, torch.Tensor] = {}
    scored = []
    for text in templates:
        space = prompt.use_space_prefix and mask_takes_space(text, kind)
        if space not in vocabularies:
            vocabularies[space] = word_token_ids(tokenizer, space)
        probe, words_fit = _probe(prompt, text, given_words or prompt.label_words, strip, vocabularies[space])
        if not words_fit and not auto_words:
            logger.info("template %r skipped: the label words %s are not one token each after it", text, given_words)
            continue
        train_rows = vocabulary_log_probs(trainer, probe, train) if auto_words else None
        rows = vocabulary_log_probs(trainer, probe, selection)
        cf = vocabulary_log_probs(trainer, probe, _content_free(prompt, text)).log_probs if calibrate else None
        options: dict[tuple[int, ...], Optional[float]] = {}
        if words_fit:  # the given (or preset) words compete too, first
            options[tuple(probe.label_token_ids)] = None
        if auto_words:
            found = class_candidates(train_rows, vocabularies[space], n_labels, per_class)
            for ids, acc, _ in rank_assignments(train_rows, found, cf):
                options.setdefault(ids, acc)
        for ids, train_acc in options.items():
            acc, ce = _scores(rows, torch.tensor([ids]), cf)
            scored.append({
                "template": text, "label_words": [tokenizer.decode([i]).strip() for i in ids],
                "dev_accuracy": round(float(acc[0]), 6), "dev_loss": round(float(ce[0]), 6),
                "train_accuracy": train_acc,
                "calibration": calibration_bias(cf, torch.tensor(ids)).tolist() if cf is not None else None})
    if not scored:
        raise ValueError(f"none of the templates {templates} of task {preset.name!r} takes the label words "
                         f"{given_words} as one token each: give label_words='auto' or other words")
    order = sorted(range(len(scored)), key=lambda i: (-scored[i]["dev_accuracy"], scored[i]["dev_loss"], i))
    best = scored[order[0]]
    choice = PromptChoice(
        template=best["template"],
        label_words={label_text(label): w for label, w in zip(prompt.labels, best["label_words"])},
        strip_s1_punctuation=strip, calibration=best["calibration"], selected_on=selected_on,
        candidates=[scored[i] for i in order], search_time_s=round(time.perf_counter() - started, 3))
    logger.info("prompt chosen on %s in %.1f s: %r with %s (accuracy there %.3f%s)", selected_on,
                choice.search_time_s, choice.template, choice.label_words, best["dev_accuracy"],
                ", calibrated" if calibrate else "")
    return choice
