"""FZOO (``estimator="fzoo"``) without a model: what it measures on plain tensors, its step against
the formula written out, the specs it refuses with their fix (what it refuses alike with HiZOO,
a server job asking for it among them: test_slot_estimator_specs.py).

On SGLang's ModelRunner (the batched forward, the step, replay): tests/engine/test_fzoo_estimator.py."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from sglang.srt.mezo.cli.train import build_parser
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.training.estimators import FZOO, choose, slot_pairs_needed
from sglang.srt.mezo.training.objectives.base import (
    ForwardInputs,
    GenerationInputs,
    LogitsObjective,
    RewardObjective,
    SlotLosses,
)
from sglang.srt.mezo.zo.perturbable import PerturbableTensors, decay_mask
from sglang.srt.mezo.zo.update import StepUpdate

EPS = 0.1
BATCH = [torch.full((64,), float(k)) for k in range(4)]


def quadratic(weights: torch.Tensor, batch) -> float:
    """Mean over items of ||weights - target||^2, in doubles (as a forward's loss)."""
    return float(sum(((weights.double() - t) ** 2).sum() for t in batch) / len(batch))


class FakeSlots:
    """LoRA slots as plain tensors (the first is theta's own), and an objective's slot_losses that
    reads them; every call is recorded."""

    def __init__(self, theta: torch.Tensor, n: int):
        self.tensors = {"own": theta, **{f"probe{k}": torch.zeros_like(theta) for k in range(n)}}
        self.slots = [(name, [t]) for name, t in self.tensors.items()]
        self.calls = []

    def losses(self, batch, ids) -> SlotLosses:
        self.calls.append(list(ids))
        return SlotLosses([quadratic(self.tensors[i], batch) for i in ids], {"calls": len(self.calls)})


def make(n: int = 3):
    theta = torch.randn(64, generator=torch.Generator().manual_seed(0))
    tensors = PerturbableTensors([theta], decay_mask(["w.weight"]))
    slots = FakeSlots(theta, n)
    return theta, tensors, slots, FZOO(EPS, tensors, slots.slots, slots.losses)


def test_one_call_measures_theta_and_every_probe_on_the_whole_batch_and_leaves_theta_alone():
    theta, tensors, slots, fzoo = make(3)
    start = theta.clone()
    measured = fzoo.measure(BATCH, [7, 8, 9])
    assert slots.calls == [["own", "probe0", "probe1", "probe2"]] and measured.owed == []
    assert torch.equal(theta, start)
    l0 = quadratic(start, BATCH)
    for k, ((lk, l0_k), seed) in enumerate(zip(measured.losses, [7, 8, 9])):
        probe = torch.add(start, tensors.z(seed, 0, start), alpha=EPS)  # as the estimator writes it
        assert torch.equal(slots.tensors[f"probe{k}"], probe)
        assert lk == quadratic(probe, BATCH) and l0_k == l0
    assert fzoo.step_loss(measured.losses) == l0


def test_the_step_is_the_formula_written_out():
    """theta - lr / (N sigma) sum_k (L_k - L_0) z_k, sigma the sample std of L_1..L_N, no eps."""
    theta, tensors, _, fzoo = make(3)
    start, seeds, lr = theta.clone(), [7, 8, 9], 0.05
    losses = fzoo.measure(BATCH, seeds).losses
    grads = fzoo.gradients(losses)
    update = StepUpdate(MeZOConfig(estimator="fzoo", n_spsa=3, weight_decay=0.0), tensors)
    update.apply([], seeds, grads, lr)
    l0, lk = losses[0][1], [lp for lp, _ in losses]
    sigma = statistics.stdev(lk)
    want = start.double() - lr / (3 * sigma) * sum(
        (lp - l0) * tensors.z(s, 0, start).double() for lp, s in zip(lk, seeds))
    assert grads == [(lp - l0) / sigma for lp in lk]
    assert torch.allclose(theta.double(), want, rtol=0, atol=1e-6)
    assert not torch.equal(theta, start)


def test_equal_losses_give_no_step_and_one_probe_is_refused():
    _, _, _, fzoo = make()
    assert fzoo.gradients([(2.0, 1.0)] * 3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="n_spsa >= 2"):
        fzoo.gradients([(2.0, 1.0)])


def test_an_empty_share_measures_nothing_and_too_few_slots_are_named():
    _, _, slots, fzoo = make(2)
    assert fzoo.measure([], [1, 2]).losses == [(0.0, 0.0), (0.0, 0.0)] and slots.calls == []
    with pytest.raises(ValueError, match="n_spsa=3 needs 4 LoRA slots .* has 3"):
        fzoo.measure(BATCH, [1, 2, 3])


def test_the_spec_chooses_it_and_says_how_many_slots_it_takes():
    theta, tensors, slots, _ = make(3)
    spec = MeZOConfig(estimator="fzoo", n_spsa=3)
    pairs = [(slots.slots[0], slots.slots[1]), (slots.slots[2], slots.slots[3])]
    estimator = choose(spec, tensors, pairs, loss=None, sided=None, slot_losses=slots.losses)
    assert isinstance(estimator, FZOO) and [i for i, _ in estimator.slots] == ["own", "probe0", "probe1", "probe2"]
    # n_spsa + 1 slots, in pairs: 3 probes and theta fill 2 pairs, 4 probes and theta need 3.
    assert spec.slot_pairs_per_forward == 2 and MeZOConfig(estimator="fzoo", n_spsa=4).slot_pairs_per_forward == 3
    assert slot_pairs_needed(spec, 4, one_forward_loss=True) == 2
    with pytest.raises(ValueError, match="estimator='fzoo' with n_spsa=3 needs 4 free LoRA slots \\(this runner has 3"):
        slot_pairs_needed(spec, 3, one_forward_loss=True)
    with pytest.raises(ValueError, match="needs the trainable set's slot pairs"):
        choose(spec, tensors, [], loss=None, sided=None, slot_losses=slots.losses)


def test_the_spec_implies_sgd_and_old_records_keep_the_two_sided_estimate():
    spec = MeZOConfig(estimator="fzoo", n_spsa=4)
    assert spec.update_rule == "sgd" and spec.resolve("causal").update_rule == "sgd"
    assert MeZOConfig().estimator == "spsa" and MeZOConfig().resolve("causal").update_rule == "normalized"
    old = {k: v for k, v in MeZOConfig().to_dict().items() if k != "estimator"}  # a record from before the field
    assert MeZOConfig.from_record(old).estimator == "spsa"
    assert MeZOConfig.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("change, message", [
    (dict(n_spsa=1), "n_spsa=1 has none; give n_spsa >= 2"),
    (dict(update_rule="normalized"), "update_rule='normalized' would rescale it again: leave update_rule unset or "
                                     "set it to 'sgd'"),
    (dict(update_rule="sign"), "update_rule='sign' would rescale"),
    (dict(update_rule="adam"), "update_rule='adam' would rescale"),
    (dict(trainable="full"), "needs trainable='lora'"),
    (dict(paired_forward=False), "needs trainable='lora' and LoRA slots \\(paired_forward not False\\)"),
    (dict(split_batch=True, batch_size=8), "split_batch is another estimator: turn it off or use estimator='spsa'"),
    (dict(estimator="zoo"), "unknown estimator 'zoo': choose one of \\['spsa', 'fzoo', 'hizoo'\\]"),
])
def test_a_spec_that_cannot_run_fzoo_is_refused_with_the_fix(change, message):
    with pytest.raises(ValueError, match=message):
        MeZOConfig(**{"estimator": "fzoo", "n_spsa": 4, **change})


def test_the_cli_has_the_flag():
    args = build_parser().parse_args(["--estimator", "fzoo", "--n-spsa", "4"])
    assert args.estimator == "fzoo" and args.n_spsa == 4
    assert "--estimator" in build_parser().format_help()


class SlotModel:
    """A Model whose answer (and logits row) for a sequence is its first id plus its adapter's offset;
    every call is recorded."""

    OFFSET = {"own": 0, "p1": 1, "p2": 3}

    def __init__(self):
        self.calls = []

    def logits(self, sequences, positions, vocab_ids, lora_ids):
        self.calls.append(list(lora_ids))
        return torch.tensor([[float(s[0] + self.OFFSET[i]), 0.0] for s, i in zip(sequences, lora_ids)])

    def generate(self, inputs, lora_ids, sampled=False):
        self.calls.append(list(lora_ids))
        assert sampled  # a training step samples
        return [[p[0] + self.OFFSET[i]] for p, i in zip(inputs.prompts, lora_ids)]


class FirstLogit(LogitsObjective):
    def forward_inputs(self, batch):
        return ForwardInputs([list(s) for s in batch], [len(s) - 1 for s in batch], None)

    def loss(self, logits, batch):
        return float(logits[:, 0].double().mean())

    def predict(self, logits, batch):
        return [0] * len(batch), [0] * len(batch)

    def train_metrics(self, logits, batch):
        return {"train_first": float(logits[:, 0].sum())}


class FirstId(RewardObjective):
    def generation_inputs(self, batch):
        return GenerationInputs([list(s) for s in batch], 1, frozenset())

    def answers(self, generated, batch):
        return [str(g[0]) for g in generated], list(batch)

    def rewards(self, answers, batch):
        return [int(a) / 10 for a in answers]


@pytest.mark.parametrize("objective", [FirstLogit(), FirstId()], ids=["logits", "reward"])
def test_both_families_measure_every_slot_on_the_whole_batch_in_one_call(objective):
    batch, slots = [(1, 2), (5, 6, 7)], ["own", "p1", "p2"]
    model = SlotModel()
    measured = objective.slot_losses(model, batch, slots)
    assert model.calls == [["own", "own", "p1", "p1", "p2", "p2"]]
    assert measured.losses == [objective.batch_loss(model, batch, slot) for slot in slots]
    assert len(set(measured.losses)) == 3
    if isinstance(objective, FirstLogit):  # metrics: the mean over the slots
        assert measured.metrics == {"train_first": (6 + 8 + 12) / 3}
    else:
        assert measured.metrics == {"train_reward_mean": pytest.approx((1 + 5 + 2 + 6 + 4 + 8) / 60)}
