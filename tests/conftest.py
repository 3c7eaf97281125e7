"""Tiny random models and tokenizers that the tests make for themselves (nothing is downloaded).

SGLang builds its parallel runtime once per process, so a test module that needs a ModelRunner
builds one in a module-scoped fixture and releases it at teardown (``runner_for``).

Each test carries the marker of its folder: ``unit`` (no ModelRunner: the data, the spec, the noise,
the layer contract), ``engine`` (SGLang ModelRunners in this process, checked against HF/PEFT) and
``integration`` (servers, worker groups and a run killed and resumed, in subprocesses).
``bash scripts/test.sh -m unit`` runs the quick ones.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys

import pytest

FOLDER_MARKERS = ("unit", "engine", "integration")


def pytest_collection_modifyitems(items):
    for item in items:
        folder = item.path.parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)

# The fixtures import torch, transformers and SGLang inside, where they need them (hence each
# `noqa: PLC0415`): this file is loaded for every test, the quick unit ones included.

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Enough repetitions of the label words that the byte-level BPE makes each one a single token.
CORPUS = [
    "it was great . it was terrible . it was good . it was bad . it was okay .",
    "a great movie , a terrible plot , good acting , bad jokes , an okay ending .",
    "the film is great fun . the script is terrible . yes no maybe true false .",
    "does this mean that the premise is true ? yes or no ? maybe .",
    "description entity expression human location number : what where who when how many",
    "one two three four five six seven eight nine ten the a an and or but not very",
] * 20

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

# A learnable toy task in SST-2's format: the label is the keyword good/bad.
SUBJECTS = ["the film", "the script", "a movie", "the acting", "the plot", "the ending", "the jokes", "the one"]
TOY_ROWS = [(1, f"{s} is very good .") for s in SUBJECTS] + [(0, f"{s} is very bad .") for s in SUBJECTS]


def _train_bpe(vocab_size: int = 400):
    from tokenizers import ByteLevelBPETokenizer  # noqa: PLC0415

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS)
    return tok


@pytest.fixture(scope="session")
def roberta_tokenizer_dir(tmp_path_factory):
    """A RoBERTa-style byte-level BPE tokenizer (<s> ... </s>, <mask> with lstrip)."""
    from tokenizers import AddedToken  # noqa: PLC0415
    from tokenizers.processors import RobertaProcessing  # noqa: PLC0415
    from transformers import RobertaTokenizerFast  # noqa: PLC0415

    d = tmp_path_factory.mktemp("roberta_tok")
    bpe = _train_bpe()
    # As in roberta-base: the mask token swallows the space before it ("was <mask>" -> was, <mask>).
    bpe._tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                               mask_token=AddedToken("<mask>", lstrip=True, rstrip=False))
    tok.save_pretrained(str(d))
    return str(d)


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tmp_path_factory):
    """A causal-LM byte-level BPE tokenizer (bos <s>, no mask token), as SmolLM2's is."""
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    d = tmp_path_factory.mktemp("llama_tok")
    bpe = _train_bpe()
    bpe.post_processor = None
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>")
    tok.save_pretrained(str(d))
    return str(d)


def make_causal_lm(path: str, arch: str = "llama", vocab_size: int = 400, seed: int = 0,
                   tokenizer_dir: str | None = None, dtype: str = "float32") -> str:
    """Save a tiny random Llama or Qwen2 checkpoint (2 layers, hidden 64) at ``path``."""
    import torch  # noqa: PLC0415
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **common))
    else:
        raise ValueError(arch)
    model.to(getattr(torch, dtype)).save_pretrained(path)
    if tokenizer_dir:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


def make_masked_lm(path: str, tokenizer_dir: str) -> str:
    """Save a tiny random RoBERTa masked LM (2 layers, hidden 64) with a non-zero LM-head bias (so
    that the label words' bias matters) and the RoBERTa-style tokenizer at ``path``."""
    import torch  # noqa: PLC0415
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM  # noqa: PLC0415

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2, architectures=["RobertaForMaskedLM"])
    model = RobertaForMaskedLM(config).eval()
    with torch.no_grad():
        model.lm_head.bias.normal_(0, 0.5)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@contextlib.contextmanager
def runner_for(spec):
    """Build a ModelRunner for ``spec`` and release it afterwards (one at a time per process)."""
    from sglang.srt.mezo.engine.runner import build_model_runner, release_model_runner  # noqa: PLC0415

    runner = build_model_runner(spec)
    try:
        yield runner
    finally:
        release_model_runner(runner)
        gc.collect()


@contextlib.contextmanager
def trainer_for(trainer_cls, *args, **kwargs):
    """A trainer whose runner is released afterwards."""
    from sglang.srt.mezo.engine.runner import release_model_runner  # noqa: PLC0415

    trainer = trainer_cls(*args, **kwargs)
    try:
        yield trainer
    finally:
        release_model_runner(trainer.runner)
        del trainer
        gc.collect()


def trained_looking(trainer) -> list:
    """Give ``trainer``'s adapter B != 0 (a new one's B is 0, so its A factors would not change the
    loss) and return copies of its tensors."""
    import torch  # noqa: PLC0415  (unit tests load this conftest too, and must not pay for torch)

    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in trainer.trainable.tensors:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
    trainer.trainable.after_update()
    return [t.clone() for t in trainer.trainable.tensors]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, llama_tokenizer_dir):
    return make_causal_lm(str(tmp_path_factory.mktemp("llama")), "llama", tokenizer_dir=llama_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory, llama_tokenizer_dir):
    return make_causal_lm(str(tmp_path_factory.mktemp("qwen2")), "qwen2", tokenizer_dir=llama_tokenizer_dir)


# SmolLM2-135M-Instruct's chat template (ChatML with a default system prompt).
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
          "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


@pytest.fixture(scope="session")
def tiny_chat_llama(tmp_path_factory, llama_tokenizer_dir):
    """A tiny random Llama whose tokenizer has SmolLM2's ChatML template and end-of-turn token."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    tok = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    d = tmp_path_factory.mktemp("chat_tok")
    tok.save_pretrained(str(d))
    return make_causal_lm(str(tmp_path_factory.mktemp("chat_llama")), "llama", vocab_size=len(tok) + 6,
                          tokenizer_dir=str(d))


@pytest.fixture(scope="session")
def toy_file(tmp_path_factory):
    """TOY_ROWS as an SST-2-style TSV."""
    path = tmp_path_factory.mktemp("toy") / "toy.tsv"
    path.write_text("label\tsentence\n" + "".join(f"{y}\t{s}\n" for y, s in TOY_ROWS))
    return str(path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread: on a shared 2-core machine two OpenMP threads competing with another
    busy process made a step ~20x slower."""
    import torch  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 values, so that the tiny test tensors go through the chunked path too."""
    import sglang.srt.mezo.zo.noise as noise  # noqa: PLC0415

    monkeypatch.setattr(noise, "CHUNK", 64)


@pytest.fixture
def fresh(monkeypatch):
    """No grader type registered and no extension loaded in this process; the folder of the user's
    own module (tests/outside_package) on sys.path, as PYTHONPATH puts it there, and
    my_mezo_extension not imported yet, so that loading it registers."""
    from sglang.srt.mezo import extensions  # noqa: PLC0415 - only the tests that use this fixture need it
    from sglang.srt.mezo.data import graders  # noqa: PLC0415 - the same

    monkeypatch.setattr(graders, "_registered", {})
    monkeypatch.setattr(extensions, "_loaded", set())
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.abspath(__file__)), "outside_package"))
    monkeypatch.delitem(sys.modules, "my_mezo_extension", raising=False)
    yield
    sys.modules.pop("my_mezo_extension", None)
