"""The completion and options objectives on SGLang's forward, checked against HF transformers + PEFT."""

from __future__ import annotations

import pytest
import torch
from conftest import trainer_for
from test_trainer import load_into_peft, peft_model, small_config
from transformers import AutoTokenizer

from sglang.srt.mezo.data.chat import TokenizedCompletion
from sglang.srt.mezo.data.presets import get_task
from sglang.srt.mezo.training.objectives.completion import CompletionObjective
from sglang.srt.mezo.training.objectives.options import OptionsItem, OptionsObjective
from sglang.srt.mezo.training.trainer import MeZOTrainer


def completion_item(prompt: list[int], completion: list[int], context: list[int] = ()) -> TokenizedCompletion:
    """prompt + completion, the completion's tokens the targets; ``context`` tokens after the
    completion are not targets (an assistant message with weight 0, say)."""
    ids = list(prompt) + list(completion) + list(context)
    targets = [False] * len(prompt) + [True] * len(completion) + [False] * len(context)
    return TokenizedCompletion(tuple(ids), tuple(targets), len(prompt))


BATCH = [completion_item([0, 5, 7, 9], [11, 3, 40]), completion_item([0, 8], [200, 4, 9, 9, 12], [17, 18]),
         completion_item([0, 300, 301, 302, 303, 304], [305])]


def hf_token_mean_loss(model, batch) -> float:
    """PEFT's causal-LM loss with -100 labels off the targets, as one padded batch would give it."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for item in batch:
            ids = torch.tensor([item.input_ids])
            labels = torch.tensor([[t if m else -100 for t, m in zip(item.input_ids, item.targets)]])
            n = sum(item.targets)
            nll += model(ids, labels=labels).loss.item() * n
            count += n
    return nll / count


def random_adapter(trainer):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in trainer.trainable.tensors:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
    trainer.trainable.after_update()


def test_completion_loss_and_projected_gradient_match_peft(tmp_path, tiny_llama, llama_tokenizer_dir):
    objective = CompletionObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir))
    cfg = small_config(tmp_path, epsilon=1e-2)
    with trainer_for(MeZOTrainer, tiny_llama, cfg, objective=objective) as tr:
        random_adapter(tr)
        theta = {n: t.clone() for n, t in zip(tr.trainable.names, tr.trainable.tensors)}
        peft = peft_model(tiny_llama, tr.save(str(tmp_path / "saved")))
        # Vocabulary logits only where a target is predicted: 3 + 5 + 1 rows, never the prompt's.
        inputs = objective.forward_inputs(BATCH)
        assert inputs.positions[1] == [1, 2, 3, 4, 5] and inputs.row_counts() == [3, 5, 1]
        assert tr.logits_for(inputs).shape[0] == 9
        assert abs(tr.compute_loss(BATCH) - hf_token_mean_loss(peft, BATCH)) < 1e-5

        seed = 99
        assert tr.trainable.paired  # the +/- eps passes run as one forward on two adapter slots
        g, lp, lm = tr.projected_gradient(BATCH, seed)
        losses = {}
        for sign in (1, -1):
            load_into_peft(peft, {n: theta[n] + sign * cfg.epsilon * tr.tensors.z(seed, i, theta[n])
                                  for i, n in enumerate(tr.trainable.names)})
            losses[sign] = hf_token_mean_loss(peft, BATCH)
        assert abs(lp - losses[1]) < 1e-5 and abs(lm - losses[-1]) < 1e-5
        g_hf = (losses[1] - losses[-1]) / (2 * cfg.epsilon)
        assert abs(g) > 1e-3 and abs(g - g_hf) < 1e-3 * max(1.0, abs(g_hf))
        # The paired forward leaves the adapter exactly where it was.
        assert all(torch.equal(t, theta[n]) for n, t in zip(tr.trainable.names, tr.trainable.tensors))

        # Token accuracy: the greedy next token at each target position, as HF's argmax gives it.
        load_into_peft(peft, theta)
        hits = total = 0
        with torch.no_grad():
            for item in BATCH:
                pred = peft(torch.tensor([item.input_ids])).logits[0].argmax(-1)
                for i, target in enumerate(item.targets):
                    if target:
                        hits += int(pred[i - 1] == item.input_ids[i])
                        total += 1
        predictions, references = objective.predict(tr.logits_for(inputs), BATCH)
        metrics = objective.metrics(predictions, references)
        assert metrics["eval_mean_token_accuracy"] == pytest.approx(hits / total)
        assert metrics["eval_loss"] == pytest.approx(hf_token_mean_loss(peft, BATCH), abs=1e-5)


def test_mezo_steps_lower_a_completion_loss(tmp_path, tiny_llama, llama_tokenizer_dir):
    objective = CompletionObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir))
    cfg = small_config(tmp_path, learning_rate=5e-3, epsilon=1e-2, num_steps=60, seed=1)
    with trainer_for(MeZOTrainer, tiny_llama, cfg, objective=objective) as tr:
        before = tr.compute_loss(BATCH)
        for _ in range(60):
            result = tr.step(BATCH)
        assert "train_mean_token_accuracy" in result.metrics
        assert tr.compute_loss(BATCH) < before - 0.05


def hf_option_logprobs(model, prompt, option) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + list(option)])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    return torch.stack([lp[len(prompt) - 1 + k, t] for k, t in enumerate(option)])


@pytest.mark.parametrize("score", ["mean", "sum"])
def test_option_scores_are_hf_log_likelihoods(tmp_path, tiny_llama, llama_tokenizer_dir, score):
    objective = OptionsObjective(AutoTokenizer.from_pretrained(llama_tokenizer_dir), get_task("arc-easy"), score=score)
    batch = [OptionsItem((0, 5, 7, 9), ((11,), (12, 13, 14), (40, 41)), 1), OptionsItem((0, 8), ((200, 4), (9,)), 0)]
    with trainer_for(MeZOTrainer, tiny_llama, small_config(tmp_path), objective=objective) as tr:
        random_adapter(tr)
        peft = peft_model(tiny_llama, tr.save(str(tmp_path / "saved")))
        logits = tr.logits_for(objective.forward_inputs(batch))
        assert logits.shape[0] == 1 + 3 + 2 + 2 + 1  # one row per option token
        scores = objective.scores(logits, batch)
        for item, got in zip(batch, scores):
            ref = torch.stack([getattr(hf_option_logprobs(peft, item.prompt_ids, o), score)() for o in item.options])
            assert (got - ref).abs().max().item() < 1e-5
        ce = torch.stack([torch.nn.functional.cross_entropy(s.unsqueeze(0), torch.tensor([i.label_index]))
                          for s, i in zip(scores, batch)]).mean().item()
        assert objective.loss(logits, batch) == pytest.approx(ce)
        assert objective.predict(logits, batch)[0] == [int(s.argmax()) for s in scores]
