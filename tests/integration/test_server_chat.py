"""OpenAI's own training files in a real SGLang server: a ``supervised`` job on a chat JSONL (and on
prompt/completion rows) trains with the completion objective, reports OpenAI's metric names in
its events, checkpoints and result CSV, and its adapter answers ``/v1/chat/completions``; a ``dpo``
job on preference pairs trains the DPO objective and reports TRL's reward metrics beside them; a
``reinforcement`` job on prompts generates and grades answers, reports the mean rewards, and leaves
what the server serves meanwhile unchanged; the grader endpoints answer in OpenAI's shape.

One server for the module (``python -m sglang.launch_server --enable-mezo``, the tiny Llama with
SmolLM2's ChatML template, 127.0.0.1, a free port, ``--api-key``, and ``--mezo-extensions
my_mezo_extension``: a module outside the package, on its PYTHONPATH, that registers a grader type),
driven with the official ``openai`` client. Nothing of SGLang is mocked; the fixture stops the server (terminate, then a
SIGKILL to its process group).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import openai
import pytest
from test_server import KEY, Server

from sglang.srt.mezo.run_spec.defaults import default_table

WORDS = ("good", "bad", "fine", "great", "thin", "dull")
CHATS = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": f"{w} {w}"}]}
         for w in WORDS] + [
    {"messages": [{"role": "system", "content": "be short"}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "ignored", "weight": 0}, {"role": "user", "content": "again"},
                  {"role": "assistant", "content": "hi again"}]}]
COLUMNS = ["step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"]
METRIC_KEYS = set(COLUMNS)


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def chat_server(tiny_chat_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("mezo_server_chat")
    data, out = root / "data", root / "out"
    data.mkdir()
    out.mkdir()
    # A grader type of the operator's own, from outside the package: both the HTTP process (which
    # checks a job's grader) and the scheduler's (which trains with it) must import the module.
    outside = str(Path(__file__).resolve().parents[1] / "outside_package")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [outside, os.environ.get("PYTHONPATH")]))}
    srv = Server(tiny_chat_llama, str(data), str(out), str(root / "server.log"),
                 "--mezo-extensions", "my_mezo_extension", env=env)
    try:
        yield srv
    finally:
        srv.stop()


def _client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _upload(client: openai.OpenAI, name: str, rows) -> str:
    return client.files.create(file=(name, _jsonl(rows)), purpose="fine-tune").id


def _finish(client: openai.OpenAI, job, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    return job


def _refused(client: openai.OpenAI, **job) -> dict:
    """The error body of a job request that must get a 400."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(**job)
    return refused.value.response.json()["error"]


def _chats(client: openai.OpenAI, model: str) -> None:
    """``model`` answers through /v1/chat/completions."""
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "say good"}],
                                           max_tokens=5, temperature=0)
    assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens >= 1


def _csv(client: openai.OpenAI, file_id: str) -> tuple[list[str], list[dict]]:
    text = client.files.content(file_id).text
    reader = csv.DictReader(io.StringIO(text))
    return reader.fieldnames, list(reader)


def test_a_chat_file_trains_reports_openai_metrics_and_its_adapter_chats(chat_server):
    srv = chat_server
    client = _client(srv)
    train = _upload(client, "chat_train.jsonl", CHATS)
    valid = _upload(client, "chat_valid.jsonl", CHATS[:3])
    job = client.fine_tuning.jobs.create(
        model=srv.model, training_file=train, validation_file=valid, suffix="chat",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        extra_body={"eval_steps": 2})
    assert job.model_extra["mezo"]["objective"] == "completion" and job.model_extra["mezo"]["task"] == "chat"
    job = _finish(client, job)
    assert job.status == "succeeded", job.error
    assert job.model_extra["total_steps"] == 4  # 2 epochs * 7 rows / batch 4, rounded up
    assert job.model_extra["eval_accuracy"] is None and job.model_extra["eval_loss"] is not None
    assert 0.0 <= job.model_extra["valid_mean_token_accuracy"] <= 1.0

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all(METRIC_KEYS <= set(d) for d in metrics)
    assert all("eval_accuracy" not in d for d in metrics)  # a completion run has no label accuracy
    steps = [d for d in metrics if d["train_loss"] is not None]
    evals = [d for d in metrics if d["valid_loss"] is not None]
    assert sorted(d["step"] for d in steps) == [1, 2, 3, 4]
    assert all(0.0 <= d["train_mean_token_accuracy"] <= 1.0 for d in steps)
    assert sorted(d["step"] for d in evals) == [0, 2, 4]  # before training, then every eval_steps
    assert all(0.0 <= d["valid_mean_token_accuracy"] <= 1.0 for d in evals)

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [4, 2]
    assert all(c.metrics.valid_loss is not None and c.metrics.valid_mean_token_accuracy is not None
               for c in checkpoints)

    header, rows = _csv(client, job.result_files[0])
    assert header == COLUMNS
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]  # step 0: the evaluation before training
    assert rows[0]["train_loss"] == "" and rows[0]["valid_loss"]
    assert all(float(r["train_loss"]) > 0 and 0.0 <= float(r["train_mean_token_accuracy"]) <= 1.0 for r in rows[1:])
    assert [bool(r["valid_loss"]) for r in rows[1:]] == [False, True, False, True]
    by_step = {d["step"]: d for d in evals}
    for row in rows[::2]:
        assert float(row["valid_loss"]) == pytest.approx(by_step[int(row["step"])]["valid_loss"])
        assert float(row["valid_mean_token_accuracy"]) == pytest.approx(
            by_step[int(row["step"])]["valid_mean_token_accuracy"])

    # Served at once through the chat endpoint, under "<base>:<name>" and (OpenAI's way) "<name>".
    for model in (f"{srv.model}:{job.fine_tuned_model}", job.fine_tuned_model):
        _chats(client, model)
    card = srv.get(f"/v1/models/{job.fine_tuned_model}").json()
    assert card["loaded"] and card["fine_tuning_job_id"] == job.id  # the adapter itself answered


def test_prompt_completion_rows_train_without_a_validation_file(chat_server):
    client = _client(chat_server)
    rows = [{"prompt": f"say {w} :", "completion": f" {w}"} for w in WORDS]
    job = client.fine_tuning.jobs.create(model=chat_server.model, training_file=_upload(client, "pc.jsonl", rows),
                                         hyperparameters={"n_epochs": 1, "batch_size": 3,
                                                          "learning_rate_multiplier": 2})
    job = _finish(client, job)
    assert job.status == "succeeded", job.error
    assert job.model_extra["mezo"]["objective"] == "completion"
    # OpenAI's multiplier scales the completion objective's own default lr, not the label words' 1e-3.
    completion_lr = default_table("causal", "lora", "completion")["learning_rate"]
    assert completion_lr != default_table("causal", "lora")["learning_rate"]
    assert job.hyperparameters.learning_rate_multiplier == 2
    assert job.hyperparameters.model_extra["learning_rate"] == pytest.approx(2 * completion_lr)
    header, table = _csv(client, job.result_files[0])
    assert header == COLUMNS and [r["step"] for r in table] == ["1", "2"]
    assert all(r["train_mean_token_accuracy"] and not r["valid_loss"] for r in table)  # no validation file


def test_a_bad_chat_file_is_refused_with_its_line_and_the_server_goes_on(chat_server):
    srv = chat_server
    client = _client(srv)
    jobs_before = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    bad = _upload(client, "bad_chat.jsonl", [CHATS[0], {"messages": [{"role": "robot", "content": "beep"}]}])
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=srv.model, training_file=bad)
    assert refused.value.status_code == 400
    error = refused.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "training_file", error
    assert "bad_chat.jsonl" in error["message"] and "line 2" in error["message"], error
    assert "role 'robot'" in error["message"] and "files/" not in error["message"]  # the store's paths stay private

    good = _upload(client, "good.jsonl", CHATS)
    for kwargs, param, needle in (
            ({"training_file": good, "validation_file": bad}, "validation_file", "line 2"),
            ({"training_file": good, "extra_body": {"task": "sst-2"}}, "task", "objective 'completion'")):
        error = _refused(client, model=srv.model, **kwargs)
        assert error["param"] == param and needle in error["message"], error

    # Nothing was stored for the refused jobs, and the server still answers.
    assert [j.id for j in client.fine_tuning.jobs.list(limit=100)] == jobs_before
    reply = client.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5, temperature=0)
    assert isinstance(reply.choices[0].message.content, str)


# ---------------------------------------------------------------- dpo jobs: preference pairs

def _pair(w: str) -> dict:
    return {"input": {"messages": [{"role": "user", "content": f"say {w}"}]},
            "preferred_output": [{"role": "assistant", "content": f"{w} {w}"}],
            "non_preferred_output": [{"role": "assistant", "content": "no"}]}


PAIRS = [_pair(w) for w in WORDS]
REWARD_KEYS = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}


def test_a_dpo_job_trains_on_preference_pairs_reports_trl_rewards_and_its_adapter_chats(chat_server):
    srv = chat_server
    client = _client(srv)
    train = _upload(client, "pairs_train.jsonl", PAIRS)
    valid = _upload(client, "pairs_valid.jsonl", PAIRS[:3])
    job = client.fine_tuning.jobs.create(
        model=srv.model, training_file=train, validation_file=valid, suffix="dpo",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": 3}}},
        extra_body={"eval_steps": 2})
    assert job.model_extra["mezo"]["objective"] == "dpo" and job.model_extra["mezo"]["task"] == "preference"
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
    job = _finish(client, job)
    assert job.status == "succeeded", job.error
    assert job.model_extra["total_steps"] == 4  # 2 epochs * 6 pairs / batch 3
    assert job.method.dpo.hyperparameters.batch_size == 3

    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    steps = [d for d in metrics if d["train_loss"] is not None]
    evals = [d for d in metrics if d["valid_loss"] is not None]
    assert sorted(d["step"] for d in steps) == [1, 2, 3, 4] and all(REWARD_KEYS <= set(d) for d in steps)
    assert sorted(d["step"] for d in evals) == [0, 2, 4]
    assert all({f"eval_{k}" for k in REWARD_KEYS} <= set(d) for d in evals)
    zero = next(d for d in evals if d["step"] == 0)  # at the reference weights: every margin 0, loss log 2
    assert zero["valid_loss"] == pytest.approx(0.6931471805599453) and zero["eval_rewards/margins"] == 0

    header, rows = _csv(client, job.result_files[0])
    assert header[:5] == COLUMNS and REWARD_KEYS <= set(header) and "eval_rewards/accuracies" in header
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["rewards/accuracies"] for r in rows[1:]) and rows[2]["eval_rewards/margins"], rows

    _chats(client, f"{srv.model}:{job.fine_tuned_model}")


def test_bad_dpo_jobs_are_refused_with_what_to_fix(chat_server):
    srv = chat_server
    client = _client(srv)
    jobs_before = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    pairs = _upload(client, "pairs.jsonl", PAIRS)
    chats = _upload(client, "chats.jsonl", CHATS)
    same = {**PAIRS[1], "non_preferred_output": PAIRS[1]["preferred_output"]}
    bad = _upload(client, "bad_pairs.jsonl", [PAIRS[0], same])
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
    for kwargs, param, needle in (
            ({"training_file": bad, "method": dpo}, "training_file", "bad_pairs.jsonl), line 2: 'preferred_output' and"),
            ({"training_file": chats, "method": dpo}, "training_file", "a dpo job needs preference pairs"),
            ({"training_file": pairs}, "method.type", "train them with method"),
            ({"training_file": pairs, "validation_file": chats, "method": dpo}, "validation_file", "chat rows"),
            ({"training_file": pairs, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
             "method.dpo.hyperparameters.beta", "beta must be"),
            ({"training_file": chats, "method": {"type": "grpo", "grpo": {}}}, "method.type",
             "'grpo' is not supported")):
        error = _refused(client, model=srv.model, **kwargs)
        assert error["param"] == param and needle in error["message"], (kwargs, error)
    assert [j.id for j in client.fine_tuning.jobs.list(limit=100)] == jobs_before


# ---------------------------------------------------------------- reinforcement jobs: prompts and a grader

PROMPTS = [{"messages": [{"role": "user", "content": f"say {w}"}], "answer": f"{w} {w}"} for w in WORDS]
FUZZY = {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}",
         "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
BOTH = {"type": "multi", "name": "both", "graders": {"fuzzy": FUZZY, "exact": EXACT},
        "calculate_output": "0.8 * fuzzy + 0.2 * exact"}


def _reinforcement(grader=BOTH, **hyperparameters) -> dict:
    return {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyperparameters}}


def test_a_reinforcement_job_grades_answers_reports_mean_rewards_and_its_adapter_chats(chat_server):
    srv = chat_server
    client = _client(srv)
    train = _upload(client, "prompts_train.jsonl", PROMPTS)
    valid = _upload(client, "prompts_valid.jsonl", PROMPTS[:3])
    job = client.fine_tuning.jobs.create(
        model=srv.model, training_file=train, validation_file=valid, suffix="rft",
        method=_reinforcement(n_epochs=2, batch_size=3, eval_interval=2), extra_body={"max_new_tokens": 6})
    assert job.model_extra["mezo"]["objective"] == "reward" and job.model_extra["mezo"]["task"] == "reinforcement"
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.name == "both"
    job = _finish(client, job)
    assert job.status == "succeeded", job.error
    assert job.model_extra["total_steps"] == 4 and job.method.reinforcement.hyperparameters.eval_interval == 2

    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    steps = [d for d in metrics if d["train_loss"] is not None]
    evals = [d for d in metrics if d["valid_loss"] is not None]
    assert sorted(d["step"] for d in steps) == [1, 2, 3, 4]
    assert all(0.0 <= d["train_reward_mean"] <= 1.0 for d in steps)
    assert sorted(d["step"] for d in evals) == [0, 2, 4]
    for d in evals:  # the loss MeZO minimises is minus the mean reward
        assert 0.0 <= d["valid_reward_mean"] <= 1.0 and d["valid_loss"] == pytest.approx(-d["valid_reward_mean"])

    header, rows = _csv(client, job.result_files[0])
    assert header[:5] == COLUMNS and {"train_reward_mean", "valid_reward_mean"} <= set(header)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    by_step = {d["step"]: d for d in evals}
    assert all(float(r["valid_reward_mean"]) == pytest.approx(by_step[int(r["step"])]["valid_reward_mean"])
               for r in rows[::2])
    assert all(r["train_reward_mean"] for r in rows[1:])

    _chats(client, f"{srv.model}:{job.fine_tuned_model}")


def test_served_answers_do_not_change_while_a_reinforcement_job_generates(chat_server):
    # The job generates the same prompts the server is asked for, under +eps and -eps adapters:
    # if any KV crossed between them and serving (the radix cache), the served answers would move.
    srv = chat_server
    client = _client(srv)

    def served() -> list[str]:
        return [client.chat.completions.create(model=srv.model, messages=row["messages"], max_tokens=8,
                                               temperature=0).choices[0].message.content for row in PROMPTS[:3]]

    def generated() -> str:
        r = srv.post("/generate", json={"text": "say good", "sampling_params": {"max_new_tokens": 8,
                                                                                  "temperature": 0}})
        assert r.status_code == 200, r.text
        return r.json()["text"]

    before, before_text = served(), generated()
    job = client.fine_tuning.jobs.create(model=srv.model, training_file=_upload(client, "prompts.jsonl", PROMPTS),
                                         method=_reinforcement(batch_size=3, temperature=1.0),
                                         extra_body={"num_steps": 200, "max_new_tokens": 8, "eval_steps": 1000})
    try:
        deadline = time.monotonic() + 120
        while client.fine_tuning.jobs.retrieve(job.id).model_extra["steps_completed"] < 1:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        for _ in range(3):
            assert served() == before and generated() == before_text
        progressed = client.fine_tuning.jobs.retrieve(job.id)
        assert progressed.status == "running" and progressed.model_extra["steps_completed"] >= 2  # it trained meanwhile
    finally:
        client.fine_tuning.jobs.cancel(job.id)
        _finish(client, client.fine_tuning.jobs.retrieve(job.id), timeout=60)
    assert served() == before and generated() == before_text


def test_the_grader_endpoints_run_and_validate_graders_in_openais_shape(chat_server):
    client = _client(chat_server)
    graders = client.fine_tuning.alpha.graders
    answer = graders.run(grader=BOTH, model_sample="good good", item={"answer": "good good"})
    assert answer.reward == 1.0 and answer.sub_rewards == {"fuzzy": 1.0, "exact": 1.0}
    assert answer.metadata.name == "both" and answer.metadata.type == "multi"
    assert not answer.metadata.errors.formula_parse_error and not answer.metadata.errors.invalid_variable_error
    near = graders.run(grader=BOTH, model_sample="good goo", item={"answer": "good good"})
    assert near.sub_rewards["exact"] == 0.0 and 0.0 < near.reward < 0.8
    assert graders.validate(grader=EXACT).grader.operation == "eq"
    for call, param, needle in (
            (lambda: graders.run(grader=EXACT, model_sample="x", item={"city": "x"}), None, "item.answer"),
            (lambda: graders.validate(grader={**BOTH, "calculate_output": "fuzzy +"}), "grader.calculate_output",
             "not a formula"),
            (lambda: graders.validate(grader={"type": "python", "source": "x"}), "grader.type", "sandbox")):
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        error = refused.value.response.json()["error"]
        assert needle in error["message"] and (param is None or error["param"] == param), error


def test_bad_reinforcement_jobs_are_refused_before_anything_is_stored(chat_server):
    srv = chat_server
    client = _client(srv)
    jobs_before = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    prompts = _upload(client, "prompts_ok.jsonl", PROMPTS)
    lacking = _upload(client, "prompts_lacking.jsonl", [PROMPTS[0], {"messages": PROMPTS[1]["messages"]}])
    chats = _upload(client, "chats_for_rft.jsonl", CHATS)
    for kwargs, param, needle in (
            ({"training_file": lacking, "method": _reinforcement()}, "training_file", "prompts_lacking.jsonl), line 2"),
            ({"training_file": prompts, "method": _reinforcement({**BOTH, "calculate_output": "fuzzy + nope"})},
             "method.reinforcement.grader.calculate_output", "nope"),
            ({"training_file": prompts, "method": _reinforcement({"type": "score_model", "name": "judge"})},
             "method.reinforcement.grader.type", "judge"),
            ({"training_file": chats, "method": _reinforcement()}, "training_file", "needs prompts"),
            ({"training_file": prompts}, "method.type", "reinforcement")):
        error = _refused(client, model=srv.model, **kwargs)
        assert error["param"] == param and needle in error["message"], (kwargs, error)
        if "line 2" in needle:  # the row's missing field, and whose grader reads it
            assert "item.answer" in error["message"] and "files/" not in error["message"], error
    assert [j.id for j in client.fine_tuning.jobs.list(limit=100)] == jobs_before


# ---------------------------------------------------------------- a grader type of the operator's own
# word_count (tests/outside_package/my_mezo_extension.py): the rendered input's words over max_words.
# Read on the row's answer (two words in every row), it grades 0.5 whatever the model says.
WORDS = {"type": "word_count", "name": "words", "input": "{{item.answer}}", "max_words": 4}


def test_a_reinforcement_job_grades_with_a_type_the_server_was_extended_with(chat_server):
    srv = chat_server
    client = _client(srv)
    said = client.fine_tuning.alpha.graders.run(grader={**WORDS, "input": "{{sample.output_text}}"},
                                                model_sample="one two three", item={})
    assert said.reward == 0.75 and said.metadata.type == "word_count"
    job = client.fine_tuning.jobs.create(
        model=srv.model, training_file=_upload(client, "prompts_words.jsonl", PROMPTS),
        validation_file=_upload(client, "prompts_words_valid.jsonl", PROMPTS[:3]),
        method=_reinforcement(WORDS, n_epochs=1, batch_size=3, eval_interval=2), extra_body={"max_new_tokens": 4})
    assert srv.job(job.id)["method"]["reinforcement"]["grader"] == WORDS  # as stored (the SDK knows no such type)
    job = _finish(client, job)
    assert job.status == "succeeded", job.error
    metrics = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    steps = [d for d in metrics if d["train_loss"] is not None]
    evals = [d for d in metrics if d["valid_loss"] is not None]
    assert len(steps) == 2 and all(d["train_reward_mean"] == pytest.approx(0.5) for d in steps)
    assert evals and all(d["valid_reward_mean"] == pytest.approx(0.5) for d in evals)


def test_a_job_naming_an_unregistered_grader_type_is_refused_listing_the_registered_ones(chat_server):
    client = _client(chat_server)
    prompts = _upload(client, "prompts_unknown_type.jsonl", PROMPTS)
    error = _refused(client, model=chat_server.model, training_file=prompts,
                     method=_reinforcement({**WORDS, "type": "sentence_count"}))
    assert error["param"] == "method.reinforcement.grader.type", error
    assert "'sentence_count' is not a grader type" in error["message"], error
    assert "string_check, text_similarity, multi, external, word_count" in error["message"], error


def test_a_supervised_job_trains_an_objective_the_server_was_extended_with(chat_server):
    # smoothed_completion: registered by my_mezo_extension in both of the server's processes (the HTTP
    # one reads its entry to match files and method, the scheduler's trains with its loss).
    srv = chat_server
    client = _client(srv)
    job = client.fine_tuning.jobs.create(
        model=srv.model, training_file=_upload(client, "chats_smoothed.jsonl", CHATS),
        validation_file=_upload(client, "chats_smoothed_valid.jsonl", CHATS[:3]),
        hyperparameters={"n_epochs": 1, "batch_size": 4},
        extra_body={"objective": "smoothed_completion", "max_new_tokens": 4})
    assert job.method.type == "supervised"
    job = _finish(client, job)
    assert job.status == "succeeded", job.error
    assert srv.job(job.id)["mezo"]["objective"] == "smoothed_completion"
    steps = [e.data for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
             if e.type == "metrics" and e.data["train_loss"] is not None]
    assert len(steps) == 2 and all(d["train_loss"] > 0 for d in steps)
    _chats(client, job.fine_tuned_model)


def test_jobs_naming_an_objective_that_cannot_serve_them_are_refused(chat_server):
    client = _client(chat_server)
    chats = _upload(client, "chats_bad_objective.jsonl", CHATS)
    error = _refused(client, model=chat_server.model, training_file=chats,
                     extra_body={"objective": "my_mezo_extension:NoSuchLoss"})
    assert error["param"] == "objective" and "has no 'NoSuchLoss'" in error["message"], error
    error = _refused(client, model=chat_server.model, training_file=chats,
                     method={"type": "dpo", "dpo": {"hyperparameters": {}}},
                     extra_body={"objective": "smoothed_completion"})
    assert error["param"] == "method.type", error
    assert "objective 'smoothed_completion' trains with method 'supervised', not 'dpo'" in error["message"], error
