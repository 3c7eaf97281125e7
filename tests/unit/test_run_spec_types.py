"""A run spec's list fields hold names: an item of another type is refused with the field's name,
not crashed on (a server job's hyperparameters reach MeZOConfig as JSON)."""

from __future__ import annotations

import pytest

from sglang.srt.mezo.run_spec.config import MeZOConfig


@pytest.mark.parametrize("field", ["lora_target_modules", "report_to"])
@pytest.mark.parametrize("item", [3, None, ["q_proj"], {"name": "q_proj"}])
def test_an_item_that_is_not_text_is_refused_by_name(field, item):
    with pytest.raises(ValueError, match=f"{field} must be a list of names"):
        MeZOConfig(**{field: ["v_proj", item]})


def test_names_are_stripped():
    assert MeZOConfig(lora_target_modules=[" q_proj", "v_proj "]).lora_target_modules == ("q_proj", "v_proj")
    assert MeZOConfig(lora_target_modules="q_proj, v_proj").lora_target_modules == ("q_proj", "v_proj")
