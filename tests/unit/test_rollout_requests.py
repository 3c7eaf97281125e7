"""The torch-free parts of a job whose rewards come from its client (issue 38), without a model: the
``external`` grader's object, a job body that has one checked into the run spec (and what it
refuses, by field), the rewards a client posts checked against the waiting step, the store's
record of them (one post a step, never two), and the job's own key.

A real server runs the whole loop in tests/integration/test_external_rewards.py.
"""

from __future__ import annotations

import json
import threading

import pytest

from sglang.srt.mezo.data.graders import GraderError, parse_grader
from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.job_keys import key_hash, matches, new_job_key
from sglang.srt.mezo.server.job_requests import parse_job_request
from sglang.srt.mezo.server.rollout_book import RolloutBook, client_view
from sglang.srt.mezo.server.routes.rollouts import check_rewards
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import JobStore

PROMPTS = [{"messages": [{"role": "user", "content": "capital of France?"}], "answer": "Paris"},
           {"messages": [{"role": "user", "content": "capital of Italy?"}], "answer": "Rome"}]
PENDING = {"step": 3, "data": [{"id": "rollout-3-0"}, {"id": "rollout-3-1"}, {"id": "rollout-3-2"}]}


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    settings = ServerSettings(output_dir=str(tmp_path / "out"), data_dir=str(data), model_path=str(tmp_path / "model"),
                              served_model_name="tiny")
    return settings, JobStore(settings.output_dir)


def _job(server, grader=None, **extra):
    method = {"type": "reinforcement", "reinforcement": {"grader": grader or {"type": "external"}}}
    return parse_job_request({"model": "tiny", "training_file": "prompts.jsonl", "method": method, **extra}, *server)


def _refused(call, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as refused:
        call(*args, **kwargs)
    return refused.value


def test_the_external_grader_object_and_what_it_refuses():
    assert parse_grader({"type": "external", "timeout_s": 30}).to_dict() == \
        {"type": "external", "name": "external", "timeout_s": 30.0}
    for obj, param in (({"type": "external", "timeout_s": -1}, "grader.timeout_s"),
                       ({"type": "external", "timeout_s": True}, "grader.timeout_s"),
                       ({"type": "external", "timeout_s": "10"}, "grader.timeout_s"),
                       ({"type": "external", "deadline": 10}, "grader.deadline"),
                       ({"type": "multi", "calculate_output": "x", "graders": {"x": {"type": "external"}}},
                        "grader.graders.x.type")):
        with pytest.raises(GraderError) as refused:
            parse_grader(obj)
        assert refused.value.param == param, obj
    with pytest.raises(GraderError, match="posted by the client"):
        parse_grader({"type": "external"}).score({}, None)


def test_a_job_with_an_external_grader_trains_the_reward_objective_and_validates_nothing(server):
    req = _job(server, grader={"type": "external", "name": "env", "timeout_s": 5})
    assert req.config["objective"] == "reward" and req.config["validation_holdout"] == 0.0
    assert req.config["grader"] == {"type": "external", "name": "env", "timeout_s": 5.0}
    for extra, param in (({"validation_file": "prompts.jsonl"}, "validation_file"),
                         ({"validation_holdout": 0.1}, "validation_holdout"),
                         ({"n_spsa": 2}, "n_spsa")):
        assert _refused(_job, server, **extra).param == param, extra


def test_posted_rewards_are_checked_against_the_waiting_step():
    good = [{"rollout_id": f"rollout-3-{i}", "reward": r} for i, r in enumerate((0, 0.5, -2))]
    assert check_rewards({"step": 3, "rewards": good}, PENDING) == {"rollout-3-0": 0.0, "rollout-3-1": 0.5,
                                                                     "rollout-3-2": -2.0}
    for body, status, param in (
            ([], 400, None),
            ({"step": 3, "rewards": good, "extra": 1}, 400, "extra"),
            ({"step": 4, "rewards": good}, 409, "step"),
            ({"step": 2, "rewards": good}, 409, "step"),
            ({"step": True, "rewards": good}, 400, "step"),
            ({"step": 3, "rewards": {"rollout-3-0": 1}}, 400, "rewards"),
            ({"step": 3, "rewards": good[:2]}, 400, "rewards"),
            ({"step": 3, "rewards": good + good[:1]}, 400, "rewards[3].rollout_id"),
            ({"step": 3, "rewards": [{"rollout_id": "rollout-2-0", "reward": 1}] + good[1:]}, 400,
             "rewards[0].rollout_id"),
            ({"step": 3, "rewards": [{"rollout_id": "rollout-3-0", "reward": float("inf")}] + good[1:]}, 400,
             "rewards[0].reward"),
            ({"step": 3, "rewards": [{"rollout_id": "rollout-3-0", "reward": None}] + good[1:]}, 400,
             "rewards[0].reward"),
            ({"step": 3, "rewards": [{"rollout_id": "rollout-3-0"}] + good[1:]}, 400, "rewards[0]")):
        refused = _refused(check_rewards, body, PENDING)
        assert (refused.status, refused.param) == (status, param), body


def test_a_step_takes_one_post_and_the_rewards_stay_as_the_record(tmp_path):
    book = RolloutBook(JobStore(str(tmp_path)), "ftjob-" + "0" * 24)
    assert book.current() is None and book.pending() is None
    book.publish({**PENDING, "adapters": {"m": "/somewhere"}})
    assert book.pending()["step"] == 3 and "adapters" not in client_view(book.pending(), "running")
    results = []
    posts = [threading.Thread(target=lambda r=r: results.append(book.post(3, {"step": 3, "rewards": {"x": r}})))
             for r in range(8)]
    for t in posts:
        t.start()
    for t in posts:
        t.join()
    assert sorted(results) == [False] * 7 + [True]  # exactly one of eight racing posts is stored
    assert book.pending() is None and book.posted(3)["rewards"]["x"] in range(8)
    assert not [p for p in (tmp_path / "jobs").rglob("*") if ".tmp-" in p.name]  # nothing half-written left


def test_a_jobs_key_is_its_own():
    key = new_job_key()
    record = {"job_key_sha256": key_hash(key)}
    assert matches(key, record) and not matches(new_job_key(), record)
    assert not matches(None, record) and not matches("", record) and not matches(key, {})
