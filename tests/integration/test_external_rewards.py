"""Rewards from outside the server (issue 38): a reinforcement job whose grader is ``{"type":
"external"}`` publishes each step's rollouts, its client answers them through
``/v1/chat/completions`` with the step's perturbed adapters and posts one reward per rollout.

- The same reward computed by the client (SQuAD's token F1, written here, not the package's) gives
  the same trajectory, bit for bit, and the same adapter as the built-in ``squad_f1`` grader.
- Only the job's key reads its rollouts and samples its adapters; the adapters are never listed in
  ``/v1/models`` and are gone once the step's rewards are posted; bad posts are 4xx naming the field
  and change nothing; a client that goes quiet pauses the job, and a resume waits for the same step.
- A two-turn tool environment (answer, the tool's reply, answer again) trains on the rewards it posts.
- A server killed (SIGKILL) while a step waits restarts the job from its last checkpoint, takes the
  steps after it again from the recorded rewards (the client is asked only for the waiting one),
  and ends on the same adapter.

One server for the module, replaced by a second on the same folders in the last test
(``python -m sglang.launch_server --enable-mezo``: the tiny Llama with
SmolLM2's ChatML template, 127.0.0.1, a free port, ``--api-key``), driven with the official ``openai``
client through the package's helper (:mod:`sglang.srt.mezo.server.rollout_client`). Nothing of SGLang
is mocked; the fixture stops the server.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter

import openai
import pytest
import requests
from safetensors.torch import load_file
from test_server import KEY, Server

from sglang.srt.mezo.server.rollout_client import ExternalRewards

WORDS = ("good", "bad", "fine", "great", "thin", "dull")
# Accepted answers among the words the tiny random model writes (seen in its answers here), so that
# the rewards are not all 0 and differ between the sides.
ANSWERS = ["terrible", "script", "yes", "g", "w", "jot", "jo", "reat", "ay", "ve", "it", "good", "great"]
ROWS = [{"messages": [{"role": "user", "content": f"say {w}"}], "answers": [w, *ANSWERS]} for w in WORDS]
SQUAD_F1 = {"type": "text_similarity", "name": "squad_f1", "input": "{{sample.output_text}}",
            "reference": "{{item.answers}}", "evaluation_metric": "squad_f1"}
EXTERNAL = {"type": "external", "name": "client", "timeout_s": 120}
SETTINGS = {"num_steps": 4, "batch_size": 3, "eval_steps": 2, "learning_rate": 0.5, "epsilon": 0.5,
            "max_new_tokens": 6, "validation_holdout": 0}


def _f1(prediction: str, answers: list[str]) -> float:
    """SQuAD v1.1's token F1 (evaluate-v1.1.py), best over the accepted answers: the client's reward."""

    def normalize(text: str) -> list[str]:
        text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
        return re.sub(r"\b(a|an|the)\b", " ", text).split()

    def f1(pred: list[str], ref: list[str]) -> float:
        same = sum((Counter(pred) & Counter(ref)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(pred), same / len(ref)
        return 2 * precision * recall / (precision + recall)

    return max(f1(normalize(prediction), normalize(a)) for a in answers)


@pytest.fixture(scope="module")
def servers(tiny_chat_llama, tmp_path_factory):
    """The module's server; the last test replaces it by a second one on the same folders."""
    root = tmp_path_factory.mktemp("mezo_external_rewards")
    data, out = root / "data", root / "out"
    data.mkdir()
    out.mkdir()
    holder = {"root": root, "model": tiny_chat_llama,
              "server": Server(tiny_chat_llama, str(data), str(out), str(root / "server.log"))}
    holder["server"].out = out
    try:
        yield holder
    finally:
        for srv in [v for k, v in holder.items() if isinstance(v, Server)]:
            srv.stop()


@pytest.fixture
def server(servers):
    return servers["server"]


def _client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _job(client: openai.OpenAI, grader: dict, **settings):
    train = client.files.create(file=("prompts.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS).encode()),
                                purpose="fine-tune")
    return client.fine_tuning.jobs.create(
        model=client.models.list().data[0].id, training_file=train.id, seed=7,
        method={"type": "reinforcement", "reinforcement": {"grader": grader}},
        extra_body={**SETTINGS, **settings})


def _finish(client: openai.OpenAI, job_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} is still {job.status}"
        time.sleep(0.2)
    return job


def _answer_all(rewards: ExternalRewards, rollouts) -> dict[str, float]:
    """The client's rewards: each rollout answered once, greedy, and scored by SQuAD F1."""
    out = {}
    for r in rollouts.data:
        text = rewards.answer(rollouts, r).choices[0].message.content
        out[r.id] = _f1(text, rollouts.row(r)["answers"])
    return out


def _run_dir(srv: Server, job_id: str):
    return srv.out / "jobs" / job_id / "run"


def _train_rewards(client: openai.OpenAI, job_id: str) -> dict[int, float]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100)
    return {e.data["step"]: e.data["train_reward_mean"] for e in events
            if e.type == "metrics" and e.data.get("train_loss") is not None}


def test_client_rewards_give_the_built_in_graders_trajectory_and_adapter_bit_for_bit(server):
    srv, client = server, _client(server)
    inside = _finish(client, _job(client, SQUAD_F1).id)
    assert inside.status == "succeeded", inside.error

    job = _job(client, EXTERNAL)
    assert job.model_extra["job_key"].startswith("jk-")
    assert "job_key" not in client.fine_tuning.jobs.retrieve(job.id).model_extra  # shown once
    rewards = ExternalRewards.for_job(client, job)
    steps = []
    for rollouts in rewards.rollouts():
        assert len(rollouts.data) == 2 * SETTINGS["batch_size"]  # each prompt on the +eps and the -eps adapter
        assert len({r.model for r in rollouts.data}) == 2
        posted = rewards.post(rollouts, _answer_all(rewards, rollouts))
        assert posted["step"] == rollouts.step and posted["accepted"] == len(rollouts.data)
        steps.append(rollouts.step)
    assert steps == [1, 2, 3, 4]
    outside = _finish(client, job.id)
    assert outside.status == "succeeded", outside.error

    a = json.loads((_run_dir(srv, inside.id) / "mezo_trajectory.json").read_text())
    b = json.loads((_run_dir(srv, job.id) / "mezo_trajectory.json").read_text())
    assert (a["seeds_u64le"], a["grads_f64le"], a["num_steps"]) == (b["seeds_u64le"], b["grads_f64le"], 4)
    assert _train_rewards(client, inside.id) == _train_rewards(client, job.id)
    assert any(v > 0 for v in _train_rewards(client, job.id).values())
    ta = load_file(str(_run_dir(srv, inside.id) / "adapter" / "adapter_model.safetensors"))
    tb = load_file(str(_run_dir(srv, job.id) / "adapter" / "adapter_model.safetensors"))
    assert ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)
    assert any(ta[k].abs().sum() > 0 for k in ta if "lora_B" in k)  # it trained: B moved off zero
    # The rewards stay as the job's record, one file a step.
    records = sorted((srv.out / "jobs" / job.id / "rollouts").glob("step-*.rewards.json"))
    assert len(records) == 4 and not list((srv.out / "jobs" / job.id / "rollouts").glob("step-??????"))


def _raw(srv: Server, method: str, path: str, key: str | None = None, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {KEY}", **({"X-Job-Key": key} if key else {})}
    return requests.request(method, srv.url + path, headers=headers, timeout=60, **kw)


def _first_rollouts(rewards: ExternalRewards):
    return next(iter(rewards.rollouts()))


def _base_answers(client: openai.OpenAI) -> list[str]:
    model = client.models.list().data[0].id
    return [client.chat.completions.create(model=model, messages=row["messages"], max_tokens=6,
                                           temperature=0).choices[0].message.content for row in ROWS[:3]]


def test_only_the_jobs_key_reaches_its_rollouts_and_bad_posts_change_nothing(server):
    srv, client = server, _client(server)
    served = _base_answers(client)
    job = _job(client, EXTERNAL, num_steps=2)
    key, path = job.model_extra["job_key"], f"/v1/fine_tuning/jobs/{job.id}/rollouts"
    rewards = ExternalRewards.for_job(client, job)
    try:
        rollouts = _first_rollouts(rewards)
        assert _raw(srv, "GET", path).status_code == 401
        assert _raw(srv, "GET", path, "jk-not-this-one").status_code == 403
        r = rollouts.data[0]
        names = {m.id for m in client.models.list().data}
        assert not any(name.split(":", 1)[1] in names for name in {x.model for x in rollouts.data})
        chat = {"model": r.model, "messages": rollouts.row(r)["messages"], "max_tokens": 2, "temperature": 0}
        assert _raw(srv, "POST", "/v1/chat/completions", json=chat).status_code == 404  # no key: no such model
        assert _raw(srv, "POST", "/v1/chat/completions", "jk-not-this-one", json=chat).status_code == 404
        assert _raw(srv, "POST", "/v1/chat/completions", key, json=chat).status_code == 200
        assert _base_answers(client) == served  # the base model serves as before while the client samples

        good = [{"rollout_id": x.id, "reward": 0.5} for x in rollouts.data]
        for body, status, param in (
                ({"step": rollouts.step + 1, "rewards": good}, 409, "step"),
                ({"step": rollouts.step, "rewards": good[1:]}, 400, "rewards"),
                ({"step": rollouts.step, "rewards": good + good[:1]}, 400, f"rewards[{len(good)}].rollout_id"),
                ({"step": rollouts.step, "rewards": [{**good[0], "reward": "1"}] + good[1:]}, 400,
                 "rewards[0].reward"),
                ({"step": rollouts.step, "rewards": [{**good[0], "rollout_id": "rollout-9-9"}] + good[1:]}, 400,
                 "rewards[0].rollout_id"),
                ({"step": "1", "rewards": good}, 400, "step")):
            answer = _raw(srv, "POST", path + "/rewards", key, json=body)
            assert answer.status_code == status and answer.json()["error"]["param"] == param, answer.text
        assert _raw(srv, "POST", path + "/rewards", key, data="{\"step\": NaN}").status_code == 400
        assert _first_rollouts(rewards) == rollouts  # nothing changed
        assert _raw(srv, "POST", path + "/rewards", key, json={"step": rollouts.step, "rewards": good}).status_code == 200
        again = _raw(srv, "POST", path + "/rewards", key, json={"step": rollouts.step, "rewards": good})
        assert again.status_code == 409, again.text
        gone = _raw(srv, "POST", "/v1/chat/completions", key, json=chat)
        assert gone.status_code == 404 and "ended" in gone.json()["error"]["message"], gone.text
    finally:
        client.fine_tuning.jobs.cancel(job.id)
        _finish(client, job.id, timeout=60)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert _base_answers(client) == served


def test_a_quiet_client_pauses_the_job_and_a_resume_waits_for_the_same_step(server):
    client = _client(server)
    job = _job(client, {**EXTERNAL, "timeout_s": 2}, num_steps=2)
    rewards = ExternalRewards.for_job(client, job)
    first = _first_rollouts(rewards)
    deadline = time.monotonic() + 60
    while client.fine_tuning.jobs.retrieve(job.id).status != "paused":
        assert time.monotonic() < deadline, "the job did not pause"
        time.sleep(0.2)
    events = client.fine_tuning.jobs.list_events(job.id, limit=50)
    assert any(e.data.get("reason") == "rewards_timeout" for e in events)
    assert client.fine_tuning.jobs.resume(job.id).status == "running"
    again = _first_rollouts(rewards)
    assert (again.step, [r.id for r in again.data]) == (first.step, [r.id for r in first.data])
    for rollouts in rewards.rollouts():
        rewards.post(rollouts, _answer_all(rewards, rollouts))
    assert _finish(client, job.id).status == "succeeded"


def test_external_jobs_refuse_what_they_cannot_do(server):
    client = _client(server)
    train = client.files.create(file=("p.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS).encode()),
                                purpose="fine-tune")
    model = client.models.list().data[0].id
    for extra, param in (({"validation_file": train.id}, "validation_file"),
                         ({"extra_body": {"validation_holdout": 0.2}}, "validation_holdout")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model=model, training_file=train.id,
                                           method={"type": "reinforcement", "reinforcement": {"grader": EXTERNAL}},
                                           **extra)
        assert refused.value.response.json()["error"]["param"] == param
    nested = {"type": "multi", "name": "m", "calculate_output": "x", "graders": {"x": EXTERNAL}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=model, training_file=train.id,
                                       method={"type": "reinforcement", "reinforcement": {"grader": nested}})
    assert refused.value.response.json()["error"]["param"] == "method.reinforcement.grader.graders.x.type"
    run = requests.post(server.url + "/v1/fine_tuning/alpha/graders/run", headers={"Authorization": f"Bearer {KEY}"},
                        json={"grader": EXTERNAL, "model_sample": "x"}, timeout=60)
    assert run.status_code == 400 and "client" in run.json()["error"]["message"]


def _two_turns(rewards: ExternalRewards, rollouts, rollout) -> tuple[float, list]:
    """A tool environment of two turns: the model answers, the "tool" (this client) reads the answer
    and replies with a lookup, the model answers again; the reward weighs both turns."""
    row = rollouts.row(rollout)
    first = rewards.answer(rollouts, rollout).choices[0].message.content
    looked_up = f"the tool found: {' '.join(row['answers'][:3])}"
    turns = [*row["messages"], {"role": "assistant", "content": first}, {"role": "user", "content": looked_up}]
    second = rewards.answer(rollouts, rollout, messages=turns).choices[0].message.content
    return 0.5 * _f1(first, row["answers"]) + 0.5 * _f1(second, row["answers"][:3] + [first or "-"]), turns


def test_a_two_turn_tool_environment_trains_on_the_rewards_it_posts(server):
    client = _client(server)
    job = _job(client, EXTERNAL, num_steps=2)
    rewards = ExternalRewards.for_job(client, job)
    posted_means = {}
    for rollouts in rewards.rollouts():
        scored = {r.id: _two_turns(rewards, rollouts, r) for r in rollouts.data}
        assert all(len(turns) == 3 for _, turns in scored.values())  # the second turn saw the first and the tool
        rewards.post(rollouts, {rid: reward for rid, (reward, _) in scored.items()})
        posted_means[rollouts.step] = sum(reward for reward, _ in scored.values()) / len(scored)
    assert _finish(client, job.id).status == "succeeded"
    # The steps trained on what the client posted: their mean reward is the posted rewards' mean.
    assert _train_rewards(client, job.id) == pytest.approx(posted_means)


# ---------------------------------------------------------------- a crash (last: it replaces the server)


def test_a_job_killed_while_waiting_resumes_from_its_recorded_rewards_and_ends_on_the_same_adapter(servers):
    srv = servers["server"]
    client = _client(srv)
    reference = _finish(client, _job(client, SQUAD_F1).id)
    assert reference.status == "succeeded", reference.error
    job = _job(client, EXTERNAL)
    rewards = ExternalRewards.for_job(client, job)
    for rollouts in rewards.rollouts():
        if rollouts.step == 4:  # steps 1-3 answered, the checkpoint of step 2 saved: a crash now
            break
        rewards.post(rollouts, _answer_all(rewards, rollouts))
    srv.kill()
    del servers["server"]

    root = servers["root"]
    servers["restarted"] = new = Server(servers["model"], str(root / "data"), str(root / "out"),
                                        str(root / "server2.log"))
    new.out = srv.out
    client = _client(new)
    rewards = ExternalRewards.for_job(client, job)  # the same key, kept (hashed) in the store
    answered = []
    for rollouts in rewards.rollouts():  # step 3 is taken again from its recorded rewards, not asked for
        rewards.post(rollouts, _answer_all(rewards, rollouts))
        answered.append(rollouts.step)
    assert answered == [4]
    assert _finish(client, job.id).status == "succeeded"
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("resumes from its last checkpoint" in m for m in events)
    a = json.loads((_run_dir(new, reference.id) / "mezo_trajectory.json").read_text())
    b = json.loads((_run_dir(new, job.id) / "mezo_trajectory.json").read_text())
    assert (a["seeds_u64le"], a["grads_f64le"]) == (b["seeds_u64le"], b["grads_f64le"])
    ta = load_file(str(_run_dir(new, reference.id) / "adapter" / "adapter_model.safetensors"))
    tb = load_file(str(_run_dir(new, job.id) / "adapter" / "adapter_model.safetensors"))
    assert ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)
