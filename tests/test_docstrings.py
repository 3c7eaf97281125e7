"""The runnable examples in the public modules' docstrings run and give what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["mezo_trainer", "mezo_mlm_trainer", "mezo_tasks", "mezo_lora", "mezo_runner",
                                  "mezo_config", "mezo_prompts", "mezo_run", "mezo_io", "mezo_models", "mezo_cli",
                                  "mezo_trajectory", "mezo_replay", "mezo_distributed", "mezo_jobs", "mezo_adam",
                                  "mezo_sign_kernel"])
def test_docstring_examples(name):
    module = importlib.import_module(f"sglang.srt.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
