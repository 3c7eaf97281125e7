"""ES's population form of the reward objective (``reward_shaping="z-score"``): the z-scores of a
step's rewards, and the specs it refuses before anything loads."""

from __future__ import annotations

import math

import pytest

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.zo.update import z_scored

GRADER = {"type": "string_check", "name": "same", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
          "operation": "eq"}


def test_z_scores_are_those_of_all_the_populations_values_together():
    pairs = [(-0.2, -0.5), (-0.4, -0.4), (-0.9, -0.1)]
    values = [v for p in pairs for v in p]
    mean = sum(values) / 6
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 6)  # the population's, ddof 0
    assert z_scored(pairs) == [pytest.approx(((p - mean) / std, (m - mean) / std), abs=1e-12) for p, m in pairs]
    flat = [v for p in z_scored(pairs) for v in p]
    assert sum(flat) == pytest.approx(0, abs=1e-12) and sum(v * v for v in flat) / 6 == pytest.approx(1)


def test_z_scores_do_not_depend_on_the_rewards_scale_and_equal_rewards_give_no_step():
    pairs = [(0.1, 0.3), (0.2, 0.2), (0.0, 0.5)]
    scaled = [(100 * p + 7, 100 * m + 7) for p, m in pairs]
    assert z_scored(scaled) == [pytest.approx(z, abs=1e-9) for z in z_scored(pairs)]
    assert z_scored([(0.5, 0.5), (0.5, 0.5)]) == [(0.0, 0.0), (0.0, 0.0)]


def _spec(**kw) -> MeZOConfig:
    base = dict(model_path="m", objective="reward", task="reinforcement", grader=GRADER, n_spsa=4,
                reward_shaping="z-score")
    base.update(kw)
    return MeZOConfig(**base)


def test_a_population_spec_says_how_many_lora_slots_one_generation_holds():
    assert _spec().directions_per_forward == 4
    assert _spec(reward_shaping="difference").directions_per_forward == 1
    assert _spec(reward_shaping="difference", split_batch=True, batch_size=4).directions_per_forward == 4


@pytest.mark.parametrize("change, message", [
    (dict(objective="completion", task="squad", grader=None), "needs objective 'reward', not 'completion'"),
    (dict(n_spsa=1), "n_spsa=1 is one pair.*give n_spsa >= 2"),
    (dict(split_batch=True, batch_size=8), "turn split_batch off"),
    (dict(trainable="full"), "needs trainable='lora'"),
    (dict(paired_forward=False), "paired forward"),
    (dict(reward_shaping="rank"), "reward_shaping"),
])
def test_a_population_spec_that_cannot_run_is_refused_with_the_fix(change, message):
    with pytest.raises(ValueError, match=message):
        _spec(**change)
