"""The runnable examples in the public modules' docstrings run and give what they show."""

import doctest
import importlib
import pkgutil

import pytest

import sglang.srt.mezo as package

# Every module of the package, found by walking it, and the seed's three entry points.
MODULES = sorted(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")) + [
    "sglang.srt.mezo_trainer", "sglang.srt.mezo_mlm_trainer", "sglang.srt.mezo_tasks"]


def test_the_walk_finds_the_package():
    assert {"sglang.srt.mezo.run_spec.config", "sglang.srt.mezo.training.trainer", "sglang.srt.mezo.server.store"} \
        <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
