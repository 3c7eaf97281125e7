"""The dtype default follows the machine: bf16 only where the device computes it natively."""

from __future__ import annotations

import pytest

import sglang.srt.mezo.engine.hardware as hardware
from sglang.srt.mezo.engine.hardware import choose_dtype
from sglang.srt.mezo.run_spec.config import MeZOConfig


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv("SGLANG_MEZO_ASSUME_BF16", raising=False)


@pytest.mark.parametrize("flags, want", [({"avx2", "avx512f"}, "float32"), ({"avx512f", "avx512_bf16"}, "bfloat16"),
                                         ({"amx_tile", "amx_bf16", "avx512_bf16"}, "bfloat16"), (set(), "float32")])
def test_auto_is_bf16_only_with_native_bf16_instructions(monkeypatch, flags, want):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags) | {"fpu"})
    choice = choose_dtype("auto", "cpu")
    assert choice.dtype == want
    assert choice.reason.startswith(want + ": this CPU (")
    if want == "float32":
        assert "no bf16 instructions" in choice.reason
    else:
        assert "avx512_bf16" in choice.reason or "amx_bf16" in choice.reason


def test_a_given_dtype_always_wins(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"fpu"}))
    assert choose_dtype("bfloat16", "cpu").dtype == "bfloat16"
    assert choose_dtype("bfloat16", "cpu").reason == "bfloat16: given"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert choose_dtype("float32", "cpu").dtype == "float32"


def test_the_override_variable_stands_in_for_the_probe(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"fpu"}))
    monkeypatch.setenv("SGLANG_MEZO_ASSUME_BF16", "1")
    assert choose_dtype(None, "cpu").dtype == "bfloat16"
    monkeypatch.setenv("SGLANG_MEZO_ASSUME_BF16", "0")
    assert choose_dtype(None, "cpu").dtype == "float32"


def test_this_machine_reports_its_cpu_by_name():
    assert hardware.cpu_name() and hardware.cpu_name() in choose_dtype("auto", "cpu").reason


def test_causal_lora_defaults_to_auto_and_other_kinds_to_float32():
    assert MeZOConfig().resolve("causal").dtype == "auto"
    assert MeZOConfig(trainable="full").resolve("causal").dtype == "float32"
    assert MeZOConfig().resolve("masked").dtype == "float32"
    assert MeZOConfig(dtype="bfloat16").resolve("causal").dtype == "bfloat16"
