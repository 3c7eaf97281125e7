"""HiZOO (``estimator="hizoo"``) without a model: what it measures on plain tensors, three steps
against the formula written out in float64, the Hessian rebuilt and the weights replayed from the
record bit for bit, the trajectory's curvature record (and an old record without one), the specs it
refuses with their fix (what it refuses alike with FZOO, a server job asking for it among them:
test_slot_estimator_specs.py).

On SGLang's ModelRunner (the batched forward, the steps, replay, resume): tests/engine/test_hizoo_estimator.py
and tests/engine/test_run.py."""

from __future__ import annotations

import json

import pytest
import torch

from sglang.srt.mezo.cli.train import build_parser
from sglang.srt.mezo.run_spec.config import HIZOO_SMOOTHING, MeZOConfig
from sglang.srt.mezo.training.estimators import HiZOO, choose, slot_pairs_needed
from sglang.srt.mezo.training.objectives.base import SlotLosses
from sglang.srt.mezo.zo.perturbable import PerturbableTensors, decay_mask
from sglang.srt.mezo.zo.trajectory import Trajectory
from sglang.srt.mezo.zo.update import StepUpdate, replay_steps

EPS = 0.1
#: A large smoothing constant, so that three steps move H well above float rounding.
ALPHA = 0.3
BATCH = [torch.linspace(-1, 1, 48) * k for k in range(1, 5)]


def loss(weights: torch.Tensor, batch) -> float:
    """A quartic, so that the curvature term L+ + L- - 2 L0 depends on where theta is."""
    w = weights.double()
    return float(sum((((w - t) ** 2) + 0.5 * (w - t) ** 4).sum() for t in batch) / len(batch))


class FakeSlots:
    """LoRA slots as plain tensors (the first is theta's own), and an objective's slot_losses that
    reads them; every call is recorded."""

    def __init__(self, theta: torch.Tensor, n: int):
        names = ["own"] + [f"{side}{k}" for k in range(n) for side in ("plus", "minus")]
        self.tensors = {name: theta if name == "own" else torch.zeros_like(theta) for name in names}
        self.slots = [(name, [t]) for name, t in self.tensors.items()]
        self.calls = []

    def losses(self, batch, ids) -> SlotLosses:
        self.calls.append(list(ids))
        return SlotLosses([loss(self.tensors[i], batch) for i in ids], {"calls": len(self.calls)})


def make(n: int = 1, **spec):
    theta = torch.randn(48, generator=torch.Generator().manual_seed(0)) * 0.3
    tensors = PerturbableTensors([theta], decay_mask(["w.weight"]))
    slots = FakeSlots(theta, n)
    config = MeZOConfig(estimator="hizoo", n_spsa=n, epsilon=EPS, hessian_smoothing=ALPHA, weight_decay=0.0,
                        update_rule="sgd", learning_rate=0.02, lr_schedule="constant", **spec)
    update = StepUpdate(config, tensors)
    return theta, tensors, slots, update, HiZOO(EPS, tensors, slots.slots, slots.losses, update.hessian), config


def test_one_call_measures_theta_and_both_sides_of_every_direction_and_leaves_theta_alone():
    theta, tensors, slots, update, hizoo, _ = make(2)
    with torch.no_grad():
        update.hessian.h[0].uniform_(0.5, 4.0, generator=torch.Generator().manual_seed(3))  # an H that is not 1
    start = theta.clone()
    measured = hizoo.measure(BATCH, [7, 8])
    assert slots.calls == [["own", "plus0", "minus0", "plus1", "minus1"]] and measured.owed == []
    assert torch.equal(theta, start)
    h = update.hessian.h[0]
    for k, seed in enumerate([7, 8]):
        z = tensors.z(seed, 0, start).double()
        plus, minus = slots.tensors[f"plus{k}"], slots.tensors[f"minus{k}"]
        assert torch.allclose(plus.double(), start.double() + EPS * z / h.sqrt(), rtol=0, atol=1e-6)
        assert torch.allclose(minus.double(), start.double() - EPS * z / h.sqrt(), rtol=0, atol=1e-6)
        assert measured.losses[k] == (loss(plus, BATCH), loss(minus, BATCH))
    l0 = loss(start, BATCH)
    assert measured.losses[-1] == (l0, l0) and hizoo.step_loss(measured.losses) == l0
    assert hizoo.curvatures(measured.losses) == [lp + lm - 2 * l0 for lp, lm in measured.losses[:2]]
    assert hizoo.gradients(measured.losses) == [(lp - lm) / (2 * EPS) for lp, lm in measured.losses[:2]]


@pytest.mark.parametrize("n", [1, 2])
def test_three_steps_are_the_formula_written_out_in_float64(n):
    """H_t = (1 - a) H + a * mean_k |L+_k + L-_k - 2 L0| / (2 eps^2) * H z_k^2 (H from 1; the probes
    use the H before the step), theta -= lr * mean_k g_k z_k / sqrt(H_t): the reference code's form."""
    theta, tensors, _, update, hizoo, _ = make(n)
    lr, history, curvature_rows = 0.02, [], []
    want_h = torch.ones(48, dtype=torch.float64)
    for step in range(3):
        seeds = [100 + 10 * step + k for k in range(n)]
        zs = [tensors.z(s, 0, theta).double() for s in seeds]
        before = theta.double().clone()
        # The losses, measured here one at a time at the weights the formula says.
        sides = [(loss(before + EPS * z / want_h.sqrt(), BATCH), loss(before - EPS * z / want_h.sqrt(), BATCH))
                 for z in zs]
        measured = hizoo.measure(BATCH, seeds).losses
        assert measured[:-1] == [pytest.approx(pair, rel=1e-6) for pair in sides]
        assert measured[-1] == (loss(before, BATCH), loss(before, BATCH))
        grads, curvatures = hizoo.gradients(measured), hizoo.curvatures(measured)
        update.apply(history, seeds, grads, lr, curvatures=curvatures)
        history.append((seeds, grads))
        curvature_rows.append(curvatures)
        # By hand, from the losses measured (the float32 slots' rounding moves the curvature term, a
        # difference of nearly equal losses, by more than the formula's own rounding): the Hessian,
        # then the step along z / sqrt(H_t).
        l0 = measured[-1][0]
        d = [lp + lm - 2 * l0 for lp, lm in measured[:-1]]
        estimate = sum(abs(dk) / (2 * EPS ** 2) * want_h * z * z for dk, z in zip(d, zs)) / n
        want_h = (1 - ALPHA) * want_h + ALPHA * estimate
        g = [(lp - lm) / (2 * EPS) for lp, lm in measured[:-1]]
        want_theta = before - lr * sum(gk * z for gk, z in zip(g, zs)) / n / want_h.sqrt()
        assert torch.allclose(update.hessian.h[0], want_h, rtol=1e-12, atol=0), step
        assert torch.allclose(theta.double(), want_theta, rtol=0, atol=1e-6), step
    assert (want_h - 1).abs().min() > 0.1  # H did move, everywhere
    # Resume: H rebuilt from the record alone is the live one, bit for bit.
    rebuilt = StepUpdate(make(n)[5], PerturbableTensors([theta.clone()], [True]))
    rebuilt.rebuild(history, curvature_rows)
    assert torch.equal(rebuilt.hessian.h[0], update.hessian.h[0])


def test_replaying_the_record_lands_on_the_weights_bit_for_bit_and_needs_the_curvatures():
    theta, tensors, _, update, hizoo, config = make(2)
    start, trajectory = theta.clone(), Trajectory(["w.weight"], [[48]], "float32", "cpu", 2)
    for step in range(3):
        seeds = [5 + 2 * step, 6 + 2 * step]
        measured = hizoo.measure(BATCH, seeds).losses
        grads, curvatures = hizoo.gradients(measured), hizoo.curvatures(measured)
        update.apply(trajectory.steps, seeds, grads, 0.02, curvatures=curvatures)
        trajectory.append(seeds, grads, curvatures)
    back = Trajectory.from_dict(json.loads(json.dumps(trajectory.to_dict())))
    assert back.curvatures == trajectory.curvatures and len(back.curvatures) == 3
    replayed = start.clone()
    replay_steps(back.steps, config, [replayed], [True], {}, curvatures=back.curvatures)
    assert torch.equal(replayed, theta) and not torch.equal(replayed, start)
    with pytest.raises(ValueError, match="replays from each step's curvature term: this trajectory has 3 steps and "
                                         "0 curvature rows"):
        replay_steps(back.steps, config, [start.clone()], [True], {})
    with pytest.raises(ValueError, match="needs the step's curvature terms"):
        update.apply([], [1, 2], [0.0, 0.0], 0.02)


#: A record as the version before HiZOO wrote it (zo/trajectory.py at 7ce2842): no curvature key.
OLD_RECORD = {"format": "mezo-trajectory/1", "model": {}, "config": {"estimator": "spsa"}, "start": {},
              "dtype": "float32", "device_type": "cpu", "n_spsa": 1, "tensor_names": ["a.lora_A.weight"],
              "tensor_shapes": [[2, 3]], "restore": "exact", "noise": "gaussian", "num_steps": 2,
              "seeds_u64le": "BwAAAAAAAAAJAAAAAAAAAA==", "grads_f64le": "AAAAAAAA4D8AAAAAAADQvw=="}


def test_an_old_record_loads_as_before_and_other_runs_write_no_curvatures():
    old = Trajectory.from_dict(OLD_RECORD)
    assert old.steps == [([7], [0.5]), ([9], [-0.25])] and old.curvatures == []
    assert old.to_dict() == OLD_RECORD  # written back byte for byte: no new key for a run without curvatures
    old.truncate(1)
    assert old.steps == [([7], [0.5])]
    hizoo = Trajectory(["a"], [[2]], "float32", "cpu", 1)
    hizoo.append([1], [0.5], [0.25])
    with pytest.raises(ValueError, match="curvature terms go with every step"):
        old.append([3], [0.1], [0.2])  # a record without them cannot start having them
    hizoo.append([2], [0.5], [0.125])
    hizoo.truncate(1)
    assert hizoo.curvatures == [[0.25]]


def test_the_spec_chooses_it_and_says_how_many_slots_it_takes():
    theta, tensors, slots, update, _, spec = make(2)
    pairs = [(slots.slots[0], ("twin", [torch.zeros(48)])), (slots.slots[1], slots.slots[2]),
             (slots.slots[3], slots.slots[4])]
    estimator = choose(spec, tensors, pairs, loss=None, sided=None, slot_losses=slots.losses, hessian=update.hessian)
    assert isinstance(estimator, HiZOO) and estimator.hessian is update.hessian
    # 2 * n_spsa + 1 slots, in pairs: one direction takes 2 pairs (3 of 4 slots used), two take 3.
    assert MeZOConfig(estimator="hizoo").slot_pairs_per_forward == 2 and spec.slot_pairs_per_forward == 3
    assert slot_pairs_needed(spec, 6, one_forward_loss=True) == 3
    with pytest.raises(ValueError, match="estimator='hizoo' with n_spsa=2 needs 6 free LoRA slots \\(this runner has 5"):
        slot_pairs_needed(spec, 5, one_forward_loss=True)
    with pytest.raises(ValueError, match="needs the trainable set's slot pairs, the objective's slot_losses and the "
                                         "update's hessian"):
        choose(spec, tensors, pairs, loss=None, sided=None, slot_losses=slots.losses)
    small = HiZOO(EPS, tensors, slots.slots[:3], slots.losses, update.hessian)
    with pytest.raises(ValueError, match="n_spsa=2 needs 5 LoRA slots .* has 3"):
        small.measure(BATCH, [1, 2])
    assert small.measure([], [1, 2]).losses == [(0.0, 0.0)] * 3 and slots.calls == []  # an empty share


def test_the_spec_defaults_and_records():
    spec = MeZOConfig(estimator="hizoo")
    assert spec.hessian_smoothing == HIZOO_SMOOTHING == 1e-8
    resolved = spec.resolve("causal")
    assert resolved.noise == "gaussian" and resolved.update_rule == "normalized"  # the causal-LM LoRA defaults
    assert MeZOConfig(estimator="hizoo", update_rule="sgd", hessian_smoothing=0.0).hessian_smoothing == 0.0
    old = {k: v for k, v in MeZOConfig().to_dict().items() if k != "hessian_smoothing"}  # a record from before
    assert MeZOConfig.from_record(old).hessian_smoothing is None
    assert MeZOConfig.from_dict(json.loads(json.dumps(resolved.to_dict()))) == resolved


@pytest.mark.parametrize("change, message", [
    (dict(trainable="full"), "needs trainable='lora' and LoRA slots"),
    (dict(paired_forward=False), "needs trainable='lora' and LoRA slots \\(paired_forward not False\\)"),
    (dict(split_batch=True, batch_size=8, n_spsa=2), "split_batch is another estimator: turn it off or use "
                                                     "estimator='spsa'"),
    (dict(noise="rademacher"), "random signs have z\\^2 = 1 everywhere .* use noise='gaussian'"),
    (dict(update_rule="adam"), "update_rule='adam' would precondition it again .* leave update_rule unset"),
    (dict(hessian_smoothing=1.0), "hessian_smoothing must be in \\[0, 1\\)"),
    (dict(hessian_smoothing=-0.1), "hessian_smoothing must be in \\[0, 1\\)"),
    (dict(estimator="spsa", hessian_smoothing=1e-6), "hessian_smoothing is HiZOO's .* needs estimator='hizoo', not "
                                                     "'spsa'"),
    (dict(estimator="fzoo", n_spsa=2, hessian_smoothing=1e-6), "needs estimator='hizoo', not 'fzoo'"),
])
def test_a_spec_that_cannot_run_hizoo_is_refused_with_the_fix(change, message):
    with pytest.raises(ValueError, match=message):
        MeZOConfig(**{"estimator": "hizoo", **change})


def test_the_cli_has_the_flags():
    args = build_parser().parse_args(["--estimator", "hizoo", "--hessian-smoothing", "1e-6"])
    assert args.estimator == "hizoo" and args.hessian_smoothing == 1e-6
    text = build_parser().format_help()
    assert "hizoo" in text and "--hessian-smoothing" in text
