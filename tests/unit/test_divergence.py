"""The divergence watch, the reaction rule, the learning-rate changes in a trajectory, and the
validation rows a run without validation data holds out."""

from __future__ import annotations

import pytest

from sglang.srt.mezo.data.sampling import MAX_HOLDOUT_ROWS, hold_out, holdout_share
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.divergence import MAX_SHRINKS, MIN_RISE, DivergenceWatch, default_window, react
from sglang.srt.mezo.zo.trajectory import Trajectory
from sglang.srt.mezo.zo.update import learning_rate_at


def feed(watch: DivergenceWatch, losses: list[float], start: int = 1) -> list:
    return [watch.on_train_loss(step, loss) for step, loss in enumerate(losses, start)]


def test_a_smoothed_train_loss_that_rises_past_the_tolerance_is_a_divergence_and_noise_is_not():
    watch = DivergenceWatch(window=4, tolerance=0.2)
    # Falling with noise of +-10%: never a divergence.
    falling = [2.0 * (1 - s / 100) * (1.1 if s % 2 else 0.9) for s in range(60)]
    assert not any(feed(watch, falling))
    best = min(sum(falling[i - 4:i]) / 4 for i in range(4, 61))
    # Then a climb: noticed at the first window whose mean is 20% above the best window's.
    climb = [falling[-1] * (1 + 0.05 * k) for k in range(1, 30)]
    found = [d for d in feed(watch, climb, start=61) if d is not None]
    first = found[0]
    assert first.signal == "train_loss" and first.value > 1.2 * best and first.best == pytest.approx(best)
    losses = falling + climb
    means = {step: sum(losses[step - 4:step]) / 4 for step in range(61, len(losses) + 1)}  # the window ending at step
    assert first.step == min(step for step, m in means.items() if m - best > 0.2 * best)


def test_a_loss_near_zero_must_rise_by_the_absolute_minimum_too():
    watch = DivergenceWatch(window=2, tolerance=0.2)
    feed(watch, [0.01, 0.01])
    assert feed(watch, [0.03, 0.03], start=3) == [None, None]  # tripled, but by 0.02 < MIN_RISE
    assert feed(watch, [0.01 + 2 * MIN_RISE], start=5)[0] is not None


def test_validation_loss_is_judged_against_its_best_so_far_and_survives_a_restart():
    watch = DivergenceWatch(window=10, tolerance=0.1)
    assert watch.on_eval(0, 2.0) is None and watch.on_eval(50, 1.5) is None
    assert watch.on_eval(100, 1.6) is None  # +6.7%
    d = watch.on_eval(150, 1.8)
    assert (d.signal, d.best, d.best_step, d.value) == ("eval_loss", 1.5, 50, 1.8)
    watch.restart_train()
    assert watch.on_eval(200, 1.7).best_step == 50
    assert watch.on_eval(250, None) is None


def test_the_watch_state_round_trips_so_a_resumed_run_notices_the_same_step():
    losses = [3.0, 2.0, 1.0, 1.0, 1.1, 1.3, 1.6, 2.0]
    straight = DivergenceWatch(window=2, tolerance=0.2)
    expected = feed(straight, losses)
    first = DivergenceWatch(window=2, tolerance=0.2)
    feed(first, losses[:4])
    resumed = DivergenceWatch(window=2, tolerance=0.2)
    resumed.load_state_dict(__import__("json").loads(__import__("json").dumps(first.state_dict())))
    assert feed(resumed, losses[4:], start=5) == expected[4:]
    assert any(expected)


def test_the_reaction_rule_shrinks_three_times_then_stops():
    assert [react("shrink", k) for k in range(MAX_SHRINKS + 1)] == ["shrink"] * MAX_SHRINKS + ["stop"]
    assert react("stop", 0) == "stop" and react("warn", 10) == "warn"
    assert default_window(30) == 10 and default_window(1000) == 100


def test_learning_rate_changes_compose_with_the_schedule_and_round_trip_in_the_trajectory():
    c = MeZOConfig(learning_rate=1e-2, num_steps=100, lr_schedule="linear")
    scales = [(10, 0.5), (40, 0.5)]
    assert learning_rate_at(c, 9, scales) == learning_rate_at(c, 9)
    assert learning_rate_at(c, 10, scales) == pytest.approx(0.5 * learning_rate_at(c, 10))
    assert learning_rate_at(c, 60, scales) == pytest.approx(0.25 * learning_rate_at(c, 60))
    t = Trajectory(tensor_names=["a"], tensor_shapes=[[2]], dtype="float32", device_type="cpu", n_spsa=1)
    for s in range(50):
        t.append([s], [0.1])
    t.lr_scales = list(scales)
    back = Trajectory.from_dict(t.to_dict())
    assert back.lr_scales == scales
    back.truncate(20)  # a resume from step 20: the change decided at step 40 had not happened yet
    assert back.lr_scales == [(10, 0.5)]
    # A record without changes writes no key (older readers and records stay as they were).
    assert "lr_scales" not in Trajectory(["a"], [[2]], "float32", "cpu", 1).to_dict()


def test_a_run_without_validation_data_holds_out_a_seeded_slice_of_its_rows():
    rows = list(range(579))
    share = holdout_share(None, train_rows=len(rows), has_eval=False)
    train, held = hold_out(rows, share, seed=42)
    assert len(held) == 58 and sorted(train + held) == rows and not set(train) & set(held)
    assert hold_out(rows, share, seed=42) == (train, held)
    assert len(hold_out(list(range(5000)), share, seed=1)[1]) == MAX_HOLDOUT_ROWS
    assert hold_out(rows, 0.0, seed=42) == (rows, [])
    assert holdout_share(None, train_rows=579, has_eval=True) == 0.0


def test_the_safeguard_settings_are_checked():
    for bad, needle in (({"divergence_tolerance": 0}, "divergence_tolerance must be > 0"),
                        ({"validation_holdout": 1.0}, "validation_holdout must be in \\[0, 1\\)"),
                        ({"divergence_window": 0}, "divergence_window must be >= 1"),
                        ({"on_divergence": "panic"}, "on_divergence")):
        with pytest.raises(ValueError, match=needle):
            MeZOConfig(**bad)
