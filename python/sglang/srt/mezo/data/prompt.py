"""The prompt: how a labelled example becomes token ids and the one position whose label-word
logits decide its class (LM-BFF, Gao et al. 2021; the objective MeZO needs, Malladi et al. 2023).

The data path, top to bottom:

1. ``Example`` -> prompt text: ``fill_template`` puts the texts into the template. A masked LM gets
   its mask token where ``[MASK]`` stands; a causal LM's prompt ends where ``[MASK]`` stands (the
   space before it moves into the label word: ``"... It was"`` -> ``" great"``).
2. prompt text -> token ids, truncating ``text_a`` (never the template) to the task's max length,
   and the position to read: the mask token (masked LM) or the last token (causal LM).
3. -> :class:`EncodedExample` ``(input_ids, position, label_index)``, encoded once up front.

Steps 4 and 5 (the label words' logits at that position, cross-entropy over them) are
:class:`sglang.srt.mezo.training.prompt_trainer.MeZOMLMTrainer`'s. This module imports neither torch nor the
trainers: a prompt is checked against a tokenizer before any model exists.

>>> MLMConfig(template="It was [MASK].", label_word_mapping={0: "terrible", 1: "great"})
MLMConfig(template='It was [MASK].', label_word_mapping={0: 'terrible', 1: 'great'}, use_space_prefix=True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Hashable, Mapping, Optional, Sequence

from sglang.srt.mezo.data.examples import Example
from sglang.srt.mezo.data.presets import TaskPreset, fill_template

MASK = "[MASK]"


MODEL_KINDS = ("masked", "causal")


# ---------------------------------------------------------------- prompt configuration
@dataclass
class MLMConfig:
    """A prompt that replaces a task preset's template and/or label words.

    ``template`` holds one ``[MASK]``; with ``<S1>``/``<S2>`` placeholders it is the whole
    prompt (LM-BFF style), without them it is appended to the input. ``label_word_mapping``
    maps each of the task's labels to one word; each word must be a single token of the model's
    vocabulary. ``use_space_prefix`` gives label words the leading space that byte-level BPE and
    SentencePiece vocabularies mark (``" great"``, one token, rather than ``"great"``, often two).
    A field left as None keeps the preset's value.

    >>> MLMConfig(template="It was [MASK].", label_word_mapping={0: "terrible", 1: "great"}).template
    'It was [MASK].'
    >>> MLMConfig(template="It was good.")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: template 'It was good.' has no [MASK] slot for the label word: add one, e.g. ...
    """

    template: Optional[str] = None
    label_word_mapping: Optional[Mapping[Hashable, str]] = None
    use_space_prefix: bool = True

    def __post_init__(self) -> None:
        if self.template is not None:
            check_template(self.template)
        if self.label_word_mapping is not None:
            check_label_words(self.label_word_mapping, "label_word_mapping")


def check_label_words(mapping: Mapping[Hashable, str], name: str = "label_words") -> None:
    """Raise a ValueError unless ``mapping`` maps at least one label, each to a non-empty word.

    >>> check_label_words({0: "terrible", 1: ""})
    Traceback (most recent call last):
    ...
    ValueError: label word for 1 must be a non-empty string, got ''
    """
    if not mapping:
        raise ValueError(f"{name} is empty: map every label of the task to a word")
    for key, word in mapping.items():
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"label word for {key!r} must be a non-empty string, got {word!r}")


def check_template(template: str) -> None:
    """Raise a ValueError with a fix unless ``template`` holds exactly one ``[MASK]``.

    >>> check_template("<S1> It was [MASK] .")
    """
    count = template.count(MASK)
    if count == 0:
        example = template.rstrip() + " It was [MASK]."
        raise ValueError(f"template {template!r} has no {MASK} slot for the label word: add one, e.g. {example!r}")
    if count > 1:
        raise ValueError(f"template {template!r} has {count} {MASK} slots; exactly one is supported")


def parse_label_words(spec: str) -> dict[str, str]:
    """Parse the CLI's ``"0:terrible,1:great"`` (keys are matched to the task's labels later).

    >>> parse_label_words("0:terrible, 1:great")
    {'0': 'terrible', '1': 'great'}
    """
    mapping = {}
    for item in spec.split(","):
        key, sep, word = item.partition(":")
        if not sep or not key.strip() or not word.strip():
            raise ValueError(f"label words {spec!r}: expected 'LABEL:WORD' pairs separated by commas, "
                             f"e.g. '0:terrible,1:great' (bad item {item.strip()!r})")
        mapping[key.strip()] = word.strip()
    return mapping


def label_text(label: Hashable) -> str:
    """A label as the text that label words are keyed by: ``label_text(0) == label_text("0")``."""
    # Labels compare as text so that the CLI's "0" finds the int 0, and True never matches 1.
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label).strip().lower()


def match_label_words(mapping: Mapping[Hashable, str], labels: Sequence[Hashable], task: str) -> list[str]:
    """The label words in the order of ``labels`` (the task's), whatever the spelling of the keys.

    >>> match_label_words({"1": "great", "0": "terrible"}, (0, 1), "sst-2")
    ['terrible', 'great']
    """
    by_text = {label_text(k): w for k, w in mapping.items()}
    wanted = {label_text(label) for label in labels}
    unknown = [k for k in mapping if label_text(k) not in wanted]
    missing = [label for label in labels if label_text(label) not in by_text]
    if unknown or missing or len(by_text) != len(mapping):
        raise ValueError(
            f"label words must map exactly the labels of task {task!r}: {list(labels)}; got keys "
            f"{list(mapping)} (unknown: {unknown}, missing: {missing})")
    words = [by_text[label_text(label)] for label in labels]
    if len(set(words)) != len(words):
        raise ValueError(f"label words {words} repeat a word: each label of task {task!r} needs its own word")
    return words


# ---------------------------------------------------------------- label words -> token ids

# What comes before a word decides its tokens: SentencePiece adds its word-start "▁" at the start
# of a text only, byte-level BPE marks a preceding space with "Ġ". Encoded after a line break, a
# word gets the tokens it has in the middle of a prompt, which is what the model sees and predicts.
_ANCHOR = "\n"


def label_word_pieces(tokenizer, word: str, space_prefix: bool) -> list[int]:
    """Token ids of ``word`` (with a leading space if ``space_prefix``) as it stands in a prompt.

    A lone leading ``"▁"`` (SentencePiece's spelling of a space it could not attach) is dropped.
    """
    text = (" " + word) if space_prefix else word
    anchor = tokenizer.encode(_ANCHOR, add_special_tokens=False)
    full = tokenizer.encode(_ANCHOR + text, add_special_tokens=False)
    if anchor and full[: len(anchor)] == anchor:
        ids = full[len(anchor):]
    else:  # the anchor merged with the word or normalised away: encode the word alone
        ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) > 1 and tokenizer.convert_ids_to_tokens(ids[0]) == "▁":
        ids = ids[1:]
    return ids


def label_token_ids(tokenizer, words: Sequence[str], space_prefix: bool, *, prefix_optional: bool = True) -> list[int]:
    """One token id per label word; a word that is not exactly one token raises a ValueError
    naming the pieces it split into and the one-token spellings that exist, if any
    (``prefix_optional``: whether use_space_prefix can change the prefix, worth suggesting)."""
    ids = []
    for word in words:
        pieces = label_word_pieces(tokenizer, word, space_prefix)
        if len(pieces) != 1:
            shown = [tokenizer.decode([p]) for p in pieces]
            hint = _one_token_hint(tokenizer, word, space_prefix, prefix_optional)
            raise ValueError(
                f"label word {word!r} ({'with' if space_prefix else 'without'} a leading space) is "
                f"{len(pieces)} tokens in this vocabulary: {shown}; each label word must be exactly one token. {hint}")
        ids.append(pieces[0])
    return ids


def _one_token_hint(tokenizer, word: str, space_prefix: bool, prefix_optional: bool) -> str:
    found = []
    for candidate in dict.fromkeys((word, word.lower(), word.capitalize(), word.upper())):
        for space in (space_prefix, not space_prefix) if prefix_optional else (space_prefix,):
            if len(label_word_pieces(tokenizer, candidate, space)) == 1:
                found.append(repr(candidate) + ("" if space == space_prefix else
                                                f" with use_space_prefix={space}"))
    if found:
        return f"One-token alternatives: {', '.join(found)}"
    return "Choose another word (a common lower-case word usually is one token)"


def mask_takes_space(template: str, kind: str) -> bool:
    """Whether the label word at ``[MASK]`` follows a space (and so is spelled " great").

    >>> mask_takes_space("<S1> It was [MASK]", "causal"), mask_takes_space("<S1>?\\n[MASK]", "causal")
    (True, False)
    """
    check_template(template)
    if kind == "masked":
        # LM-BFF: the mask stands for a word inside the sentence, so label words get their space
        # prefix wherever the mask is.
        return True
    after = template[template.index(MASK):]
    if "<S1>" in after or "<S2>" in after:
        raise ValueError(f"template {template!r} puts input text after {MASK}, but a causal LM's "
                         f"prompt ends at {MASK}: move {MASK} to the end of the template")
    filled = fill_template(template, Example("x", "y" if "<S2>" in template else None, None))
    # "It was [MASK]" -> " great"; "...?\n[MASK]" -> "Yes" (a new line carries no space).
    return filled[: filled.index(MASK)].endswith((" ", "\t"))


# ---------------------------------------------------------------- examples -> token ids
@dataclass(frozen=True)
class EncodedExample:
    """A prompt ready for the model: its token ids, the position whose logits decide the label
    (the mask token, or the last token of a causal prompt), and the label's index."""

    input_ids: tuple[int, ...]
    position: int
    label_index: int


class PromptEncoder:
    """Turns :class:`Example` rows into :class:`EncodedExample` for one model and one prompt.

    Example (any RoBERTa or causal-LM tokenizer; label words are checked here, before any model
    is built)::

        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> enc = PromptEncoder.for_task(AutoTokenizer.from_pretrained("roberta-large"), "masked",
        ...                              get_task("sst-2"))  # doctest: +SKIP
        >>> enc.prompt_text(Example("a gorgeous film .", None, 1))  # doctest: +SKIP
        'a gorgeous film . It was <mask> .'
        >>> e = enc.encode(Example("a gorgeous film .", None, 1))  # doctest: +SKIP
        >>> enc.tokenizer.convert_ids_to_tokens(e.input_ids[e.position - 1: e.position + 2])  # doctest: +SKIP
        ['Ġwas', '<mask>', 'Ġ.']
    """

    def __init__(
        self,
        tokenizer,
        *,
        kind: str,
        template: str,
        label_words: Sequence[str],
        labels: Sequence[Hashable],
        max_length: int,
        strip_s1_punctuation: bool = False,
        use_space_prefix: bool = True,
        task_name: str = "task",
    ):
        if kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {kind!r}")
        check_template(template)
        if len(label_words) != len(labels):
            raise ValueError(f"{len(label_words)} label words for {len(labels)} labels")
        self.tokenizer = tokenizer
        self.kind = kind
        self.template = template
        self.labels = tuple(labels)
        self.label_words = list(label_words)
        self.max_length = max_length
        self.strip_s1_punctuation = strip_s1_punctuation
        self.task_name = task_name
        self._label_index = {label_text(label): i for i, label in enumerate(self.labels)}
        self.mask_token_id = tokenizer.mask_token_id if kind == "masked" else None
        space_before_mask = mask_takes_space(template, kind)
        self.use_space_prefix = use_space_prefix
        self.space_prefix = use_space_prefix and space_before_mask
        self.label_token_ids = label_token_ids(tokenizer, self.label_words, self.space_prefix,
                                               prefix_optional=space_before_mask)

    @classmethod
    def for_task(cls, tokenizer, kind: str, preset: TaskPreset, mlm_config: Optional[MLMConfig] = None,
                 max_length: Optional[int] = None) -> "PromptEncoder":
        """The encoder for a task preset, with ``mlm_config``'s template/label words if given."""
        mlm_config = mlm_config or MLMConfig()
        template, words = (preset.mlm_template, preset.mlm_label_words) if kind == "masked" else \
            (preset.causal_template, preset.causal_label_words)
        template, words = mlm_config.template or template, mlm_config.label_word_mapping or words
        if template is None or words is None:
            raise ValueError(
                f"task {preset.name!r} has no {kind}-LM prompt preset; "
                f"give one: mlm_config=MLMConfig(template='... [MASK] ...', label_word_mapping="
                f"{{{', '.join(f'{label!r}: ...' for label in preset.labels)}}}) (CLI: --template, --label-words)")
        # LM-BFF strips the first sentence's final mark so that its masked-LM template's " ?" ends it;
        # the paper's causal prompts keep it, and a user's template is used verbatim.
        strip = preset.strip_s1_punctuation and kind == "masked" and mlm_config.template is None
        words = match_label_words(words, preset.labels, preset.name)
        limit = getattr(tokenizer, "model_max_length", None) or preset.max_length
        return cls(tokenizer, kind=kind, template=template, label_words=words, labels=preset.labels,
                   max_length=max_length or min(preset.max_length, limit), strip_s1_punctuation=strip,
                   use_space_prefix=mlm_config.use_space_prefix, task_name=preset.name)

    def with_prompt(self, template: str, label_words: Sequence[str], strip_s1_punctuation: bool) -> "PromptEncoder":
        """The same encoder (tokenizer, kind, labels, max length) with another template and words."""
        return PromptEncoder(self.tokenizer, kind=self.kind, template=template, label_words=label_words,
                             labels=self.labels, max_length=self.max_length,
                             strip_s1_punctuation=strip_s1_punctuation, use_space_prefix=self.use_space_prefix,
                             task_name=self.task_name)

    # -- 1. example -> prompt text

    def prompt_text(self, example: Example) -> str:
        """The prompt as text: the mask token at ``[MASK]`` (masked LM), or everything before
        ``[MASK]`` without the trailing space (causal LM; the space is in the label word)."""
        text = fill_template(self.template, example, self.strip_s1_punctuation)
        if self.kind == "masked":
            return text.replace(MASK, self.tokenizer.mask_token)
        # A space before [MASK] belongs to the label word's token (" great"), never to the prompt.
        return text[: text.index(MASK)].rstrip(" \t")

    # -- 2. prompt text -> token ids and the position to read; 3. -> EncodedExample

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text)  # with the model's special tokens (<s>, BOS)
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if self.kind == "causal" and len(ids) > 1 and ids[-1] == eos and not text.endswith(self.tokenizer.eos_token):
            ids = ids[:-1]  # a tokenizer that appends EOS would put it between prompt and label word
        return ids

    def _shorten(self, example: Example, excess: int) -> Example:
        """Cut ``excess`` tokens off the end of text_a (then text_b): the template stays whole."""
        a = self.tokenizer.encode(example.text_a, add_special_tokens=False)
        if len(a) > excess:
            return dataclasses.replace(example, text_a=self.tokenizer.decode(a[: len(a) - excess]).strip())
        if example.text_b:
            b = self.tokenizer.encode(example.text_b, add_special_tokens=False)
            keep = max(len(b) - (excess - len(a)), 0)
            return dataclasses.replace(example, text_a="", text_b=self.tokenizer.decode(b[:keep]).strip())
        return dataclasses.replace(example, text_a="")

    def encode(self, example: Example) -> EncodedExample:
        """Encode one example (truncating its texts, never the template, to ``max_length``)."""
        index = self._label_index.get(label_text(example.label))
        if index is None:
            raise ValueError(f"example label {example.label!r} is not a label of task {self.task_name!r} "
                             f"({list(self.labels)}): {example.text_a[:60]!r}")
        current = example
        for _ in range(8):  # decode/re-encode can shift a token or two; a few rounds settle it
            ids = self._ids(self.prompt_text(current))
            excess = len(ids) - self.max_length
            if excess <= 0:
                break
            if not current.text_a and not current.text_b:
                raise ValueError(f"the template alone is {len(ids)} tokens, more than max_length "
                                 f"{self.max_length}: shorten the template")
            current = self._shorten(current, excess)
        else:
            raise ValueError(f"could not truncate an example to {self.max_length} tokens: {example.text_a[:60]!r}")
        if self.kind == "masked":
            found = [i for i, t in enumerate(ids) if t == self.mask_token_id]
            if len(found) != 1:
                raise ValueError(f"expected one mask token in the prompt, found {len(found)} (does the text "
                                 f"contain {self.tokenizer.mask_token!r}?): {self.prompt_text(current)[:80]!r}")
            position = found[0]
        else:
            if not ids:
                raise ValueError(f"empty prompt for {example!r}: a causal LM needs text before {MASK}")
            position = len(ids) - 1
        return EncodedExample(tuple(ids), position, index)

    def encode_all(self, examples: Sequence[Example]) -> list[EncodedExample]:
        return [self.encode(e) for e in examples]

    def describe(self) -> dict:
        """What the prompt is, for logs and summaries."""
        return {
            "model_kind": self.kind,
            "template": self.template,
            "label_words": {str(label): w for label, w in zip(self.labels, self.label_words)},
            "label_tokens": [self.tokenizer.decode([i]) for i in self.label_token_ids],
            "label_token_ids": list(self.label_token_ids),
            "max_length": self.max_length,
        }
