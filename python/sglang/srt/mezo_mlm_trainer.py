"""Prompt-based MeZO fine-tuning: a task's template and label words turn classification into
"which label word fills the [MASK] slot", the objective MeZO needs (Malladi et al. 2023, on top of
LM-BFF, Gao et al. 2021).

The data path, top to bottom (all of it in :class:`PromptEncoder` and :class:`MeZOMLMTrainer`):

1. ``Example`` -> prompt text: ``fill_template`` puts the texts into the template. A masked LM gets
   its mask token where ``[MASK]`` stands; a causal LM's prompt ends where ``[MASK]`` stands (the
   space before it moves into the label word: ``"... It was"`` -> ``" great"``).
2. prompt text -> token ids, truncating ``text_a`` (never the template) to the task's max length,
   and the position to read: the mask token (masked LM) or the last token (causal LM).
3. -> :class:`EncodedExample` ``(input_ids, position, label_index)``, encoded once up front.
4. batch -> ``MeZOTrainer.logits(ids, positions, vocab_ids=label_token_ids)``: SGLang computes the
   label words' logits at that one position only, never a full-vocabulary row.
5. -> cross-entropy over the label words (or minus accuracy, the paper's non-differentiable option).

Entry points: :func:`mezo_mlm_finetune` (one call: data, defaults, training, evaluation, saving),
:class:`MeZOMLMTrainer` (the objective on top of :class:`~sglang.srt.mezo_trainer.MeZOTrainer`),
and the CLI ``python -m sglang.srt.mezo_mlm_trainer --help``.

Example (SmolLM2-135M, 16-shot SST-2, the calibrated LoRA defaults)::

    >>> from sglang.srt.mezo_mlm_trainer import MLMConfig, mezo_mlm_finetune
    >>> result = mezo_mlm_finetune(model_path="smollm2-135m", task_name="sst-2",
    ...                            num_steps=1000, output_dir="runs/sst2")  # doctest: +SKIP
    >>> result["zero_shot_accuracy"], result["eval_accuracy"]  # doctest: +SKIP
    (0.52, 0.76)  # about what the calibration in the project notes reached on the full dev set
    >>> MLMConfig(template="It was [MASK].", label_word_mapping={0: "terrible", 1: "great"})
    MLMConfig(template='It was [MASK].', label_word_mapping={0: 'terrible', 1: 'great'}, use_space_prefix=True)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import textwrap
import time
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Optional, Sequence, Union

from sglang.srt.mezo_tasks import (
    DataFormatError,
    Example,
    TaskPreset,
    compute_metric,
    fill_template,
    get_task,
    load_examples,
    resolve_task_data,
    sample_k_shot,
)
from sglang.srt.mezo_trainer import (
    ForwardInputs, MeZOConfig, MeZOTrainer, check_model_path, model_architectures,
)

import torch  # noqa: E402  (after mezo_trainer, which sets up SGLang's CPU runtime first)

logger = logging.getLogger(__name__)

MASK = "[MASK]"
MODEL_KINDS = ("masked", "causal")
OBJECTIVES = ("ce", "accuracy")
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_TASK = "sst-2"
DEFAULT_K_SHOT = 16
DEFAULT_SEED = 42  # one of LM-BFF's five data seeds

# Hyperparameters a user who only names the task gets, by (model kind, trainable set). They are
# the same for every task, as in the paper, whose grids do not depend on the task.
# - causal + LoRA: calibrated here on SmolLM2-135M, 16-shot SST-2 (project notes: lr 1e-4 does not
#   move, 1e-2 diverges, lr 1e-3 / eps 1e-2 reaches ~76% dev after 1000 steps of batch 16).
# - causal + full: the paper's OPT setting (lr {1e-6, 1e-7}, eps 1e-3, batch 16, 20K steps).
# - masked + full: the paper's RoBERTa-large setting (batch 64, eps 1e-3, lr 1e-6, 100K steps,
#   eval every 10K). 100K steps of batch 64 is long: days on a CPU, hours on a GPU.
# - masked + LoRA: the paper's RoBERTa LoRA grid (r 8, alpha 16, lr 1e-4, eps 1e-3, wd 0.1).
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("causal", "lora"): dict(learning_rate=1e-3, epsilon=1e-2, weight_decay=0.0, batch_size=16,
                             num_steps=1000, eval_steps=250, lora_rank=8),
    ("causal", "full"): dict(learning_rate=1e-6, epsilon=1e-3, weight_decay=0.0, batch_size=16,
                             num_steps=20000, eval_steps=4000, lora_rank=8),
    ("masked", "full"): dict(learning_rate=1e-6, epsilon=1e-3, weight_decay=0.0, batch_size=64,
                             num_steps=100000, eval_steps=10000, lora_rank=8),
    ("masked", "lora"): dict(learning_rate=1e-4, epsilon=1e-3, weight_decay=0.1, batch_size=64,
                             num_steps=100000, eval_steps=10000, lora_rank=8),
}
# The paper's main result per model family: full-parameter MeZO for RoBERTa, LoRA for decoders
# (which keeps the saved artifact small and, for the small models here, trains much faster).
DEFAULT_TRAINABLE = {"masked": "full", "causal": "lora"}

DataSource = Union[str, os.PathLike, Sequence[Example], None]


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
            if not self.label_word_mapping:
                raise ValueError("label_word_mapping is empty: map every label of the task to a word")
            for key, word in self.label_word_mapping.items():
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


def _label_text(label: Hashable) -> str:
    # Labels compare as text so that the CLI's "0" finds the int 0, and True never matches 1.
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label).strip().lower()


def match_label_words(mapping: Mapping[Hashable, str], labels: Sequence[Hashable], task: str) -> list[str]:
    """The label words in the order of ``labels`` (the task's), whatever the spelling of the keys.

    >>> match_label_words({"1": "great", "0": "terrible"}, (0, 1), "sst-2")
    ['terrible', 'great']
    """
    by_text = {_label_text(k): w for k, w in mapping.items()}
    wanted = {_label_text(label) for label in labels}
    unknown = [k for k in mapping if _label_text(k) not in wanted]
    missing = [label for label in labels if _label_text(label) not in by_text]
    if unknown or missing or len(by_text) != len(mapping):
        raise ValueError(
            f"label words must map exactly the labels of task {task!r}: {list(labels)}; got keys "
            f"{list(mapping)} (unknown: {unknown}, missing: {missing})")
    words = [by_text[_label_text(label)] for label in labels]
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


# ---------------------------------------------------------------- model kind


def model_kind(tokenizer, architectures: Sequence[str]) -> str:
    """``"masked"`` for a masked LM (an ``...ForMaskedLM`` with a mask token), else ``"causal"``.

    >>> model_kind(None, ["LlamaForCausalLM"])
    'causal'
    """
    if not any(a.endswith("ForMaskedLM") for a in architectures):
        return "causal"
    if getattr(tokenizer, "mask_token", None) is None:
        raise ValueError(f"model architecture {list(architectures)} is a masked LM but its tokenizer has no "
                         "mask token: give the tokenizer that belongs to the checkpoint")
    return "masked"


def check_trainable(kind: str, trainable: str) -> None:
    """Fail early on a trainable set SGLang cannot train for this kind of model."""
    if kind == "masked" and trainable == "lora":
        # SGLang's LoRA manager wraps no module of its BERT/RoBERTa layers (and reads
        # num_key_value_heads, which RobertaConfig lacks), so there is no adapter to train.
        raise ValueError("LoRA is not available for masked LMs in SGLang's LoRA manager; "
                         "use trainable='full' (--trainable full), the paper's main MeZO setting")


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
        self._label_index = {_label_text(label): i for i, label in enumerate(self.labels)}
        if kind == "masked":
            self.mask_token_id = tokenizer.mask_token_id
            # LM-BFF: the mask stands for a word inside the sentence, so label words get their
            # space prefix wherever the mask is.
            space_before_mask = True
        else:
            self.mask_token_id = None
            after = template[template.index(MASK):]
            if "<S1>" in after or "<S2>" in after:
                raise ValueError(f"template {template!r} puts input text after {MASK}, but a causal LM's "
                                 f"prompt ends at {MASK}: move {MASK} to the end of the template")
            filled = fill_template(template, Example("x", "y" if "<S2>" in template else None, None))
            # "It was [MASK]" -> " great"; "...?\n[MASK]" -> "Yes" (a new line carries no space).
            space_before_mask = filled[: filled.index(MASK)].endswith((" ", "\t"))
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
        index = self._label_index.get(_label_text(example.label))
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


# ---------------------------------------------------------------- the trainer

class MeZOMLMTrainer(MeZOTrainer):
    """MeZO with the prompt objective: cross-entropy over the label words' logits at the mask
    position (masked LM) or after the prompt (causal LM); ``objective="accuracy"`` trains on minus
    accuracy instead (the paper's non-differentiable objective).

    The prompt and its label words are checked before the model is built. ``train`` and
    ``evaluate`` take :class:`Example` rows (encoded once) or :class:`EncodedExample` rows.

    Example::

        >>> trainer = MeZOMLMTrainer("smollm2-135m", MeZOConfig(num_steps=200), task="sst-2")  # doctest: +SKIP
        >>> trainer.train(load_examples("sst2/train.tsv", "sst-2")[:32])  # doctest: +SKIP
        {'steps': 200, 'train_loss': [...], 'zero_shot_accuracy': None, ...}
    """

    def __init__(
        self,
        model_path: Optional[str] = None,
        config: Optional[MeZOConfig] = None,
        *,
        task: Union[str, TaskPreset] = DEFAULT_TASK,
        mlm_config: Optional[MLMConfig] = None,
        objective: str = "ce",
        runner=None,
        tokenizer=None,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective
        self.preset = task if isinstance(task, TaskPreset) else get_task(task)
        path = _resolve_model(model_path) if model_path is not None else runner.server_args.model_path
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
        self.kind = model_kind(tokenizer, model_architectures(path))
        check_trainable(self.kind, (config or MeZOConfig()).trainable)
        # Everything that can be wrong with the prompt fails here, before a model is loaded.
        self.prompt = PromptEncoder.for_task(tokenizer, self.kind, self.preset, mlm_config)
        try:
            super().__init__(path if model_path is not None else None, config, runner=runner, tokenizer=tokenizer)
        except BaseException:
            # A runner built here but not handed out would block the next one (one per process).
            if runner is None and getattr(self, "runner", None) is not None:
                from sglang.srt.mezo_runner import release_model_runner

                release_model_runner(self.runner)
            raise
        self.label_ids = torch.tensor(self.prompt.label_token_ids)

    def encode(self, examples: Sequence[Union[Example, EncodedExample]]) -> list[EncodedExample]:
        return [e if isinstance(e, EncodedExample) else self.prompt.encode(e) for e in examples]

    # -- 4. batch -> label-word logits at one position per prompt

    def forward_inputs(self, batch: Sequence[EncodedExample]) -> ForwardInputs:
        return ForwardInputs([list(e.input_ids) for e in batch], [e.position for e in batch], self.label_ids)

    def label_logits(self, batch: Sequence[EncodedExample]) -> torch.Tensor:
        """``[len(batch), n_labels]`` logits of the label words at each prompt's position."""
        return self.logits(*self.forward_inputs(batch)).float()

    # -- 5. logits -> loss

    def loss_from_logits(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> float:
        targets = torch.tensor([e.label_index for e in batch], device=logits.device)
        if self.objective == "accuracy":
            return -(logits.argmax(-1) == targets).float().mean().item()
        return torch.nn.functional.cross_entropy(logits.float(), targets).item()

    def predict_from_logits(self, logits: torch.Tensor, batch: Sequence[EncodedExample]) -> tuple[list, list]:
        return logits.argmax(-1).tolist(), [e.label_index for e in batch]

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Union[Example, EncodedExample]], batch_size: Optional[int] = None) -> dict:
        """Cross-entropy (whatever the training objective), accuracy, and the task's metric if it is
        another one (``eval_macro_f1`` for CB); one forward per chunk serves all of them."""
        from tqdm.auto import tqdm

        examples = self.encode(examples)
        bs = batch_size or max(self.config.batch_size, 16)
        total, preds, refs = 0.0, [], []
        chunks = range(0, len(examples), bs)
        show = self.config.progress_bar and len(chunks) > 1
        for i in tqdm(chunks, desc="eval", leave=False, disable=not show, dynamic_ncols=True):
            chunk = examples[i: i + bs]
            logits = self.label_logits(chunk)
            targets = torch.tensor([e.label_index for e in chunk], device=logits.device)
            total += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            preds += logits.argmax(-1).tolist()
            refs += targets.tolist()
        result = {"eval_loss": total / max(len(examples), 1), "eval_accuracy": compute_metric("accuracy", preds, refs)}
        if self.preset.metric not in ("accuracy", "acc"):
            result[f"eval_{self.preset.metric}"] = compute_metric(self.preset.metric, preds, refs)
        return result

    def train(self, train_data: Sequence[Union[Example, EncodedExample]],
              eval_data: Optional[Sequence[Union[Example, EncodedExample]]] = None,
              eval_at_start: bool = True) -> dict:
        """Train as :meth:`MeZOTrainer.train` does, evaluating at step 0 too (``zero_shot_accuracy``)
        so that the history shows what training added."""
        train_data, eval_data = self.encode(train_data), self.encode(eval_data or [])
        result = super().train(train_data, eval_data or None, eval_at_start=eval_at_start)
        history = result["eval_history"]
        best = max(history, key=lambda r: r["eval_accuracy"]) if history else None
        zero = history[0] if history and history[0]["step"] == 0 else None
        result.update(
            zero_shot_accuracy=zero["eval_accuracy"] if zero else None,
            best_step=best["step"] if best else None,
        )
        return result


# ---------------------------------------------------------------- data for a run


def _resolve_model(model_path: str) -> str:
    from sglang.srt.mezo_models import resolve_model_path

    return resolve_model_path(model_path)


def _load(source: DataSource, preset: TaskPreset, split: str) -> list[Example]:
    if source is None:
        source = resolve_task_data(preset, split)
    if isinstance(source, (str, os.PathLike)):
        return load_examples(os.fspath(source), preset, split=split)
    examples = list(source)
    bad = next((e for e in examples if not isinstance(e, Example)), None)
    if bad is not None:
        raise TypeError(f"a dataset must be a path or a list of Example, found a {type(bad).__name__} item")
    return examples


def prepare_data(preset: TaskPreset, train_dataset: DataSource = None, eval_dataset: DataSource = None, *,
                 k_shot: Optional[int] = None, seed: int = DEFAULT_SEED,
                 max_eval_examples: Optional[int] = None) -> tuple[list[Example], list[Example]]:
    """(train, eval) examples for a run.

    Train: ``train_dataset`` (a path load_examples reads, a list of Example, or None for the task's
    own training data: the shared data folder if present, else the hub). ``k_shot`` examples per
    class are sampled with ``seed`` (LM-BFF); ``k_shot=None`` means 16 for the task's own training
    data and all of a dataset you give; 0 means all.
    Eval: ``eval_dataset``, else the task's dev set; a task without one (TREC) gets the k-shot dev
    split, drawn from its training data and disjoint from the training examples.
    ``max_eval_examples`` caps the eval set (a seeded sample) for quick runs.
    """
    pool = _load(train_dataset, preset, "train")
    k = (DEFAULT_K_SHOT if train_dataset is None else 0) if k_shot is None else k_shot
    if k < 0:
        raise ValueError(f"k_shot must be >= 0, got {k}")
    train, k_dev = sample_k_shot(pool, k, seed) if k else (pool, [])
    if eval_dataset is not None:
        evals = _load(eval_dataset, preset, "dev")
    elif resolve_task_data(preset, "dev") != resolve_task_data(preset, "train"):
        evals = _load(None, preset, "dev")
    else:
        # No dev split (TREC): LM-BFF's k-shot dev, never an example we train on.
        if not k_dev or train_dataset is not None:
            seen = set(train)
            rest = [e for e in _load(None, preset, "train") if e not in seen]
            k_dev = sample_k_shot(rest, k or DEFAULT_K_SHOT, seed, with_dev=False)[0]
        evals = k_dev
        logger.info("task %s has no dev set: evaluating on %d held-out training examples", preset.name, len(evals))
    if not evals:
        logger.warning("no evaluation examples for task %s: accuracy will not be measured", preset.name)
    if max_eval_examples is not None and len(evals) > max_eval_examples:
        keep = sorted(random.Random(seed).sample(range(len(evals)), max_eval_examples))
        evals = [evals[i] for i in keep]
    return train, evals


def resolve_hyperparameters(kind: str, trainable: Optional[str] = None, **given: Any) -> dict[str, Any]:
    """The run's hyperparameters: what is given, else :data:`DEFAULTS` for (kind, trainable).

    Without ``eval_steps``, evaluations are spaced as in the default schedule (4 per run for
    causal LoRA, 10 for the rest).

    >>> h = resolve_hyperparameters("causal", num_steps=400)
    >>> h["trainable"], h["learning_rate"], h["num_steps"], h["eval_steps"]
    ('lora', 0.001, 400, 100)
    """
    trainable = trainable or DEFAULT_TRAINABLE[kind]
    if (kind, trainable) not in DEFAULTS:
        raise ValueError(f"trainable must be one of {sorted({t for _, t in DEFAULTS})}, got {trainable!r}")
    table = DEFAULTS[(kind, trainable)]
    out = {"trainable": trainable}
    for name, default in table.items():
        out[name] = given.get(name) if given.get(name) is not None else default
    if given.get("eval_steps") is None and given.get("num_steps") is not None:
        fraction = table["eval_steps"] / table["num_steps"]
        out["eval_steps"] = max(1, round(out["num_steps"] * fraction))
    if out["num_steps"] < 0:
        raise ValueError(f"num_steps must be >= 0, got {out['num_steps']}")
    return out


# ---------------------------------------------------------------- one call


def mezo_mlm_finetune(
    model_path: str = DEFAULT_MODEL,
    task_name: str = DEFAULT_TASK,
    train_dataset: DataSource = None,
    eval_dataset: DataSource = None,
    *,
    num_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    learning_rate: Optional[float] = None,
    epsilon: Optional[float] = None,
    weight_decay: Optional[float] = None,
    k_shot: Optional[int] = None,
    seed: int = DEFAULT_SEED,
    output_dir: Optional[str] = None,
    trainable: Optional[str] = None,
    lora_rank: Optional[int] = None,
    device: Optional[str] = None,
    eval_steps: Optional[int] = None,
    mlm_config: Optional[MLMConfig] = None,
    objective: str = "ce",
    max_eval_examples: Optional[int] = None,
    eval_at_start: bool = True,
    progress_bar: bool = True,
    **config_overrides: Any,
) -> dict:
    """Fine-tune ``model_path`` on a task with MeZO and the prompt objective; evaluate; save.

    Arguments left as None take :data:`DEFAULTS` for the model's kind (masked or causal LM) and
    the trainable set (``trainable``: "lora" or "full"; default full for masked LMs, LoRA for
    causal LMs); data defaults are in :func:`prepare_data` (16-shot, seed 42, the task's dev set).
    ``mlm_config`` replaces the preset's template and/or label words. ``num_steps=0`` evaluates
    zero-shot with the same prompt and writes no adapter; ``eval_at_start=False`` skips that
    step-0 evaluation in a training run (``zero_shot_accuracy`` is then None). Other :class:`MeZOConfig` fields
    (``lora_alpha``, ``n_spsa``, ``lr_schedule``, ``dtype``, ...) pass through ``config_overrides``.
    With ``output_dir`` the adapter (``<output_dir>/adapter``, PEFT format), ``metrics.jsonl``,
    the MeZO trajectory and ``summary.json`` are written there; without it nothing is written.

    Returns a dict with ``eval_accuracy`` (final), ``best_eval_accuracy``, ``zero_shot_accuracy``
    (step 0), ``eval_history``, ``train_loss`` (one value per step), ``adapter_path``, ``steps``,
    ``wall_time_s`` and what the run used (``hyperparameters``, ``prompt``, example counts).

    Example::

        >>> r = mezo_mlm_finetune(model_path="roberta-large", task_name="sst-2", num_steps=10000,
        ...                       batch_size=64, learning_rate=1e-6, epsilon=1e-3)  # doctest: +SKIP
        >>> r["best_eval_accuracy"]  # doctest: +SKIP
        0.87
    """
    from transformers import AutoTokenizer

    from sglang.srt.mezo_runner import release_model_runner

    start = time.perf_counter()
    preset = get_task(task_name)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    unknown = set(config_overrides) - {f.name for f in dataclasses.fields(MeZOConfig)}
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}")
    path = _resolve_model(model_path)
    check_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kind = model_kind(tokenizer, model_architectures(path))
    hp = resolve_hyperparameters(kind, trainable, num_steps=num_steps, batch_size=batch_size,
                                 learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay,
                                 eval_steps=eval_steps, lora_rank=lora_rank)
    check_trainable(kind, hp["trainable"])
    # The prompt is checked against the tokenizer before any data is read or model loaded.
    prompt = PromptEncoder.for_task(tokenizer, kind, preset, mlm_config)
    train, evals = prepare_data(preset, train_dataset, eval_dataset, k_shot=k_shot, seed=seed,
                                max_eval_examples=max_eval_examples)
    if hp["num_steps"] > 0 and not train:
        raise ValueError(f"the training set for task {preset.name!r} is empty: give train_dataset with examples")
    if not evals and hp["num_steps"] == 0:
        raise ValueError("nothing to do: num_steps=0 (zero-shot) needs an eval set with examples")
    if train and hp["batch_size"] > len(train):
        logger.info("batch size %d > %d training examples: every step uses all of them", hp["batch_size"], len(train))
        hp["batch_size"] = len(train)
    train_enc, eval_enc = prompt.encode_all(train), prompt.encode_all(evals)

    config = MeZOConfig(
        trainable=hp["trainable"], lora_rank=hp["lora_rank"], learning_rate=hp["learning_rate"],
        epsilon=hp["epsilon"], weight_decay=hp["weight_decay"], num_steps=hp["num_steps"],
        batch_size=hp["batch_size"], eval_steps=hp["eval_steps"], seed=seed, device=device,
        output_dir=output_dir if hp["num_steps"] > 0 else None, progress_bar=progress_bar, **config_overrides,
    )
    logger.info("%s (%s LM), task %s: %d train / %d eval examples, %s", model_path, kind, preset.name,
                len(train), len(evals), {k: v for k, v in hp.items()})
    trainer = MeZOMLMTrainer(path, config, task=preset, mlm_config=mlm_config, objective=objective, tokenizer=tokenizer)
    try:
        if hp["num_steps"] == 0:
            zero = {"step": 0, **trainer.evaluate(eval_enc)}
            result = {
                "steps": 0, "train_loss": [], "eval_history": [zero], "eval_accuracy": zero["eval_accuracy"],
                "eval_loss": zero["eval_loss"], "best_eval_accuracy": zero["eval_accuracy"], "best_step": 0,
                "zero_shot_accuracy": zero["eval_accuracy"], "adapter_path": None,
                "trainable_parameters": trainer.trainable.num_parameters,
            }
        else:
            result = trainer.train(train_enc, eval_enc, eval_at_start=eval_at_start)
    finally:
        release_model_runner(trainer.runner)
    result.update(
        wall_time_s=time.perf_counter() - start,
        task=preset.name, model_path=model_path, objective=objective, seed=seed,
        num_train_examples=len(train), num_eval_examples=len(evals),
        hyperparameters=hp, prompt=prompt.describe(),
    )
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        result["summary_path"] = os.path.join(output_dir, "summary.json")
        with open(result["summary_path"], "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    causal, masked = DEFAULTS[("causal", "lora")], DEFAULTS[("masked", "full")]

    def per_kind(name: str) -> str:
        return f"(default: per model kind: causal-LM LoRA {causal[name]:g}, masked-LM full {masked[name]:g})"

    table = "\n".join(
        f"  {kind} LM, {trainable:<4}  lr {v['learning_rate']:<6g} eps {v['epsilon']:<6g} batch {v['batch_size']:<3} "
        f"steps {v['num_steps']:<6} eval every {v['eval_steps']:<5} wd {v['weight_decay']:g}"
        + ("  (not available in SGLang yet)" if (kind, trainable) == ("masked", "lora") else "")
        for (kind, trainable), v in DEFAULTS.items())
    p = argparse.ArgumentParser(
        prog="python -m sglang.srt.mezo_mlm_trainer",
        description=textwrap.fill(
            "MeZO (forward-only, zeroth-order) prompt fine-tuning of a masked or causal LM on a classification "
            "task, inside SGLang's model runner. Evaluates at step 0 (zero-shot), every --eval-steps and at the "
            "end; writes the adapter, metrics.jsonl and summary.json into --output-dir, and prints a summary.",
            width=100),
        epilog="defaults by model kind and trainable set (the same for every task; given options override):\n"
               f"{table}\n\n"
               "examples:\n"
               "  python -m sglang.srt.mezo_mlm_trainer                     # SmolLM2-135M, 16-shot SST-2\n"
               "  python -m sglang.srt.mezo_mlm_trainer --num-steps 0       # zero-shot only\n"
               "  python -m sglang.srt.mezo_mlm_trainer --task rte --num-steps 2000 --max-eval-examples 200\n"
               "  python -m sglang.srt.mezo_mlm_trainer --model-path roberta-large --task sst-2 \\\n"
               "      --template '<S1> It was [MASK] .' --label-words 0:terrible,1:great",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = "(default: %(default)s)"
    p.add_argument("--model-path", default=DEFAULT_MODEL,
                   help=f"checkpoint folder, Hugging Face hub id, or the built-in alias 'smollm2-135m' {d}")
    p.add_argument("--task", default=DEFAULT_TASK,
                   help=f"task preset: sst-2, sst-5, trec, mnli, snli, rte, cb, boolq {d}")
    p.add_argument("--train-file", default=None,
                   help="training data (.tsv/.txt/.jsonl/.json/.csv, a save_to_disk folder or hub:NAME) "
                        "(default: the task's training set from ../shared/data if present, else the hub)")
    p.add_argument("--eval-file", default=None,
                   help="evaluation data, same formats (default: the task's dev set; TREC: a k-shot dev "
                        "split disjoint from the training examples)")
    p.add_argument("--k-shot", type=int, default=None,
                   help=f"examples per class sampled from the training data, 0 for all (default: "
                        f"{DEFAULT_K_SHOT} for the task's own training set, all of a --train-file)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"data, LoRA-init and perturbation seed {d}")
    p.add_argument("--num-steps", type=int, default=None,
                   help=f"MeZO steps, 0 for zero-shot evaluation only {per_kind('num_steps')}")
    p.add_argument("--batch-size", type=int, default=None, help=f"examples per step {per_kind('batch_size')}")
    p.add_argument("--learning-rate", type=float, default=None, help=f"learning rate {per_kind('learning_rate')}")
    p.add_argument("--epsilon", type=float, default=None, help=f"perturbation scale {per_kind('epsilon')}")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay (default: 0.1 for masked-LM LoRA, else 0)")
    p.add_argument("--trainable", choices=("lora", "full"), default=None,
                   help="what MeZO trains: a LoRA adapter or every weight (default: lora for causal LMs, "
                        "full for masked LMs)")
    p.add_argument("--lora-rank", type=int, default=None, help=f"LoRA rank (default: {causal['lora_rank']})")
    p.add_argument("--eval-steps", type=int, default=None,
                   help="evaluate every N steps (default: 4 evaluations per run for causal-LM LoRA, 10 otherwise)")
    p.add_argument("--output-dir", default=None, help="where to write the run (default: runs/<task>-<timestamp>)")
    p.add_argument("--template", default=None,
                   help="prompt template with one [MASK] and optionally <S1>/<S2>; without them it is "
                        "appended to the input (default: the task preset's)")
    p.add_argument("--label-words", default=None,
                   help="label words as LABEL:WORD pairs, e.g. 0:terrible,1:great (default: the task preset's)")
    p.add_argument("--no-space-prefix", action="store_true",
                   help="do not give label words a leading space (default: they get one, e.g. ' great')")
    p.add_argument("--objective", choices=OBJECTIVES, default="ce",
                   help=f"ce: cross-entropy over the label words; accuracy: minus accuracy (non-differentiable) {d}")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--max-eval-examples", type=int, default=None,
                   help="evaluate on at most N examples (a seeded sample) for quick runs (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines; print only the summary")
    return p


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_summary(result: dict) -> str:
    """The final table the CLI prints."""
    h = result["hyperparameters"]
    best_step = f" (step {result.get('best_step')})" if result.get("best_step") is not None else ""
    rows = [
        ("task", f"{result['task']} ({result['num_train_examples']} train / "
                 f"{result['num_eval_examples']} eval examples)"),
        ("model", f"{result['model_path']} ({result['prompt']['model_kind']} LM, "
                  + (f"LoRA r={h['lora_rank']})" if h["trainable"] == "lora" else "all weights)")),
        ("zero-shot eval accuracy (step 0)", _percent(result.get("zero_shot_accuracy"))),
        ("final eval accuracy", _percent(result.get("eval_accuracy")) + f" (step {result['steps']})"),
        ("best eval accuracy", _percent(result.get("best_eval_accuracy")) + best_step),
        ("steps", str(result["steps"])),
        ("wall time", f"{result['wall_time_s']:.1f} s"),
        ("adapter", result.get("adapter_path") or "-"),
        ("summary", result.get("summary_path") or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["MeZO summary"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.quiet:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[mezo] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        get_task(args.task)  # cheap checks first: a typo should not wait for a model to load
        mlm_config = None
        if args.template or args.label_words or args.no_space_prefix:
            mlm_config = MLMConfig(template=args.template,
                                   label_word_mapping=parse_label_words(args.label_words) if args.label_words else None,
                                   use_space_prefix=not args.no_space_prefix)
        output_dir = args.output_dir or os.path.join(
            "runs", f"{get_task(args.task).name}-{time.strftime('%Y%m%d-%H%M%S')}")
        result = mezo_mlm_finetune(
            model_path=args.model_path, task_name=args.task, train_dataset=args.train_file,
            eval_dataset=args.eval_file, num_steps=args.num_steps, batch_size=args.batch_size,
            learning_rate=args.learning_rate, epsilon=args.epsilon, weight_decay=args.weight_decay,
            k_shot=args.k_shot, seed=args.seed, output_dir=output_dir, trainable=args.trainable,
            lora_rank=args.lora_rank, device=args.device, eval_steps=args.eval_steps, mlm_config=mlm_config,
            objective=args.objective, max_eval_examples=args.max_eval_examples, progress_bar=not args.quiet,
        )
    except (DataFormatError, ValueError, OSError) as e:  # bad input: data, arguments, paths
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. the loss diverged: the message says what to change
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
