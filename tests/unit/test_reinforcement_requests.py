"""A server's reinforcement requests, without a model: a job body's method, grader and
hyperparameters checked into the run spec, the refusals with the field to fix, the grader
endpoints' answers in OpenAI's shape, and the reward columns of a job's metrics CSV.

The server itself (a real SGLang launch) runs these in tests/integration/test_server_chat.py.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.grader_requests import run_grader, validate_grader
from sglang.srt.mezo.server.job_requests import parse_job_request
from sglang.srt.mezo.server.openai_metrics import results_table
from sglang.srt.mezo.server.openai_objects import method_object
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import JobStore

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
FUZZY = {"type": "text_similarity", "name": "fuzzy", "input": "{{sample.output_text}}",
         "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}
MULTI = {"type": "multi", "name": "both", "graders": {"exact": EXACT, "fuzzy": FUZZY},
         "calculate_output": "0.5 * exact + 0.5 * fuzzy"}
PROMPTS = [{"messages": [{"role": "user", "content": "capital of France?"}], "answer": "Paris"},
           {"messages": [{"role": "user", "content": "capital of Italy?"}], "answer": "Rome"}]
CHATS = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, rows in (("prompts.jsonl", PROMPTS), ("chats.jsonl", CHATS)):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = ServerSettings(output_dir=str(tmp_path / "out"), data_dir=str(data), model_path=str(tmp_path / "model"),
                              served_model_name="tiny")
    return settings, JobStore(settings.output_dir)


def _job(server, training_file="prompts.jsonl", grader=EXACT, hyperparameters=None, **extra):
    method = {"type": "reinforcement", "reinforcement": {"grader": grader}}
    if hyperparameters is not None:
        method["reinforcement"]["hyperparameters"] = hyperparameters
    return parse_job_request({"model": "tiny", "training_file": training_file, "method": method, **extra}, *server)


def test_a_reinforcement_job_trains_the_reward_objective_with_its_grader(server):
    req = _job(server, grader=MULTI, hyperparameters={"eval_interval": 3, "n_epochs": 2, "batch_size": 2,
                                                      "eval_samples": 1, "reasoning_effort": "auto",
                                                      "compute_multiplier": "auto", "temperature": 0.7})
    assert req.config["objective"] == "reward" and req.config["task"] == "reinforcement"
    assert req.config["eval_steps"] == 3 and req.config["temperature"] == 0.7 and req.n_epochs == 2
    assert req.config["grader"]["graders"]["exact"] == EXACT  # normalised, as the job object echoes it
    method = method_object({"config": req.config}, {"batch_size": 2, "eval_steps": 3})
    assert method["type"] == "reinforcement" and method["reinforcement"]["grader"] == req.config["grader"]
    assert method["reinforcement"]["hyperparameters"]["eval_interval"] == 3


@pytest.mark.parametrize("change, param, needle", [
    (dict(grader=None), "method.reinforcement.grader", "needs method.reinforcement.grader"),
    (dict(grader={**EXACT, "operation": "is"}), "method.reinforcement.grader.operation", "'is'"),
    (dict(grader={**MULTI, "calculate_output": "exact +"}), "method.reinforcement.grader.calculate_output",
     "not a formula"),
    (dict(grader={**MULTI, "calculate_output": "exact + nope"}), "method.reinforcement.grader.calculate_output",
     "nope"),
    (dict(grader={"type": "python", "source": "def grade(s, i): return 1"}), "method.reinforcement.grader.type",
     "sandbox"),
    (dict(grader={"type": "judge"}), "method.reinforcement.grader.type", "judge"),
    (dict(training_file="chats.jsonl"), "training_file", "a reinforcement job needs prompts"),
    (dict(validation_file="chats.jsonl"), "validation_file", "holds chat rows"),
    (dict(hyperparameters={"compute_multiplier": 2}), "method.reinforcement.hyperparameters.compute_multiplier",
     "'auto'"),
    (dict(hyperparameters={"eval_samples": 4}), "method.reinforcement.hyperparameters.eval_samples", "greedily"),
    (dict(hyperparameters={"eval_interval": 0}), "method.reinforcement.hyperparameters.eval_interval", ">= 1"),
    (dict(hyperparameters={"beta": 0.1}), "method.reinforcement.hyperparameters.beta", "method 'dpo'"),
    (dict(task="squad"), "task", "drop 'task'"),
])
def test_bad_reinforcement_jobs_are_refused_naming_the_field(server, change, param, needle):
    with pytest.raises(RequestError) as refused:
        _job(server, **change)
    assert refused.value.param == param and needle in refused.value.message, refused.value.message


def test_a_job_cannot_name_a_grader_file(server):
    # A path would have the server read any file it can: a job's grader is the method's object.
    with pytest.raises(RequestError) as refused:
        _job(server, grader=EXACT, hyperparameters={"grader": "/etc/passwd"})
    assert refused.value.param == "method.reinforcement.hyperparameters.grader"
    body = {"model": "tiny", "training_file": "prompts.jsonl", "grader": "/etc/passwd",
            "method": {"type": "reinforcement", "reinforcement": {"grader": EXACT}}}
    with pytest.raises(RequestError) as refused:
        parse_job_request(body, *server)
    assert refused.value.param == "grader" and "method.reinforcement.grader" in refused.value.message


def test_prompts_in_a_supervised_job_point_to_the_reinforcement_method(server):
    with pytest.raises(RequestError) as refused:
        parse_job_request({"model": "tiny", "training_file": "prompts.jsonl"}, *server)
    assert refused.value.param == "method.type" and '"type": "reinforcement"' in refused.value.message


def test_a_grader_run_answers_openais_shape():
    answer = run_grader({"grader": MULTI, "model_sample": "Paris", "item": {"answer": "Paris"}})
    assert answer["reward"] == 1.0 and answer["sub_rewards"] == {"exact": 1.0, "fuzzy": 1.0}
    meta = answer["metadata"]
    assert meta["name"] == "both" and meta["type"] == "multi" and meta["scores"] == answer["sub_rewards"]
    assert not any(meta["errors"].values()) and meta["execution_time"] >= 0
    partial = run_grader({"grader": MULTI, "model_sample": "Pariss", "item": {"answer": "Paris"}})
    assert partial["sub_rewards"]["exact"] == 0.0 and 0.4 < partial["reward"] < 0.5
    assert validate_grader({"grader": EXACT}) == {"grader": EXACT}


@pytest.mark.parametrize("body, param, needle", [
    ({"grader": EXACT, "model_sample": "Paris", "item": {"city": "Paris"}}, None, "item.answer"),
    ({"grader": EXACT, "model_sample": "Paris", "item": "Paris"}, None, "expected an object"),
    ({"grader": EXACT, "model_sample": 3}, "model_sample", "a string"),
    ({"grader": {**EXACT, "operation": "is"}, "model_sample": "x"}, "grader.operation", "'is'"),
    ({"model_sample": "x"}, "grader", "grader is required"),
    ({"grader": EXACT, "model_sample": "x", "sample": {}}, "sample", "unknown field"),
])
def test_a_grader_run_that_cannot_grade_is_a_400_naming_the_field(body, param, needle):
    with pytest.raises(RequestError) as refused:
        run_grader(body)
    assert refused.value.status == 400 and needle in refused.value.message, refused.value.message
    if param is not None:
        assert refused.value.param == param


def test_a_reinforcement_jobs_csv_has_the_mean_rewards():
    text = results_table([-0.2, -0.5], [{"step": 0, "eval_loss": -0.1, "eval_reward": 0.1},
                                        {"step": 2, "eval_loss": -0.6, "eval_reward": 0.6}],
                         train_metrics={1: {"train_reward_mean": 0.2}, 2: {"train_reward_mean": 0.5}})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[-2:] == ["train_reward_mean", "valid_reward_mean"]
    assert [(r["step"], r["train_reward_mean"], r["valid_reward_mean"]) for r in rows] == [
        ("0", "", "0.1"), ("1", "0.2", ""), ("2", "0.5", "0.6")]
