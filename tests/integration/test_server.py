"""MeZO fine-tuning jobs in a real SGLang server (``python -m sglang.launch_server --enable-mezo``).

One server per module (a tiny random Llama made by the tests, on the CPU, 127.0.0.1, a free port,
``--api-key``), driven over HTTP with ``requests`` and with the official ``openai`` client. The
last test stops it and starts a second server on the same folders (a restart). Nothing of SGLang
is mocked. Every server is stopped by its fixture: terminate, then kill its process group
(:class:`~sglang.srt.mezo.server.local_server.LocalServer`, shared with the benchmarks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from openai import OpenAI
from safetensors.torch import load_file

from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.server.local_server import LocalServer
from sglang.srt.mezo.zo.trajectory import Trajectory

KEY = "sk-test-mezo"
AUTH = {"Authorization": f"Bearer {KEY}"}
STARTUP_TIMEOUT_S = 180

POS = ["a great movie", "good acting and a great plot", "the film is great fun", "very good , very great",
       "an okay ending but great acting", "great fun"]
NEG = ["a terrible plot", "bad jokes and a terrible script", "the script is terrible", "not good , very bad",
       "a bad movie , terrible ending", "terrible"]
PROMPTS = ["it was", "the film is", "a great movie , a"]


class Server(LocalServer):
    """A server started with SGLang's own launch command (``--api-key``; with ``--enable-mezo`` on
    the given folders unless ``mezo=False``), healthy once made, stoppable from any test."""

    def __init__(self, model: str, data_dir: str, output_dir: str, log_path: str, *extra: str, mezo: bool = True,
                 env: dict | None = None):
        flags = ["--api-key", KEY, *extra]
        if mezo:
            flags += ["--enable-mezo", "--mezo-data-dir", data_dir, "--mezo-output-dir", output_dir]
        super().__init__(model, *flags, log_path=log_path, env=env)
        self.wait_healthy(STARTUP_TIMEOUT_S)

    # -- helpers

    def get(self, path: str, **kw):
        return requests.get(self.url + path, headers=AUTH, timeout=60, **kw)

    def post(self, path: str, **kw):
        return requests.post(self.url + path, headers=AUTH, timeout=60, **kw)

    def job(self, job_id: str) -> dict:
        r = self.get(f"/v1/fine_tuning/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, statuses, timeout: float = 120, steps: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses and job["steps_completed"] >= steps:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} is {job['status']} after {timeout} s: {job}")

    def greedy(self) -> list:
        r = self.post("/generate", json={"text": PROMPTS, "sampling_params": {"max_new_tokens": 8, "temperature": 0}})
        assert r.status_code == 200, r.text
        return [x["output_ids"] for x in r.json()]


def labelled_folders(root) -> tuple:
    """``root/data`` holding ``train.jsonl`` (POS as label 1, then NEG as 0) and an empty ``root/out``,
    the two folders a server's --mezo-data-dir and --mezo-output-dir take; returns (data, out, rows)."""
    data, out = root / "data", root / "out"
    data.mkdir()
    out.mkdir()
    rows = [{"sentence": s, "label": 1} for s in POS] + [{"sentence": s, "label": 0} for s in NEG]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, out, rows


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mezo_server")
    data, out, rows = labelled_folders(root)
    outside = root / "outside"
    outside.mkdir()
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n" for r in rows[::-1]))
    (data / "bad.jsonl").write_text('{"sentence": "great", "label": 1}\n{"sentence": "bad", "label": 0}\n'
                                    '{"sentence": "oops" "label": 1}\n')
    (outside / "secret.jsonl").write_text(json.dumps({"sentence": "secret", "label": 1}) + "\n")
    os.symlink(outside / "secret.jsonl", data / "escape.jsonl")
    return {"root": root, "data": str(data), "out": str(out), "outside": str(outside)}


@pytest.fixture(scope="module")
def server(tiny_llama, dirs):
    holder = {"server": Server(tiny_llama, dirs["data"], dirs["out"], str(dirs["root"] / "server.log"))}
    yield holder
    for s in holder.values():
        s.stop()


def _client(srv: Server):
    return OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


# ---------------------------------------------------------------- the launch command


def test_flags_in_help_and_impossible_settings_refused(tiny_llama, dirs):
    help_text = subprocess.run([sys.executable, "-m", "sglang.launch_server", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    for flag in ("--enable-mezo", "--mezo-data-dir", "--mezo-output-dir", "--mezo-max-concurrent-jobs",
                 "--mezo-train-share", "--mezo-max-loaded-adapters", "--mezo-keep-checkpoints", "--mezo-max-upload-mb",
                 "--mezo-extensions"):
        assert flag in help_text
    launch = [sys.executable, "-m", "sglang.launch_server", "--model-path", tiny_llama, "--enable-mezo",
              "--mezo-output-dir", dirs["out"]]
    refused = [subprocess.Popen(launch + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for extra in (["--max-loras-per-batch", "3"], ["--mezo-train-share", "1.5"],
                             ["--mezo-max-loaded-adapters", "0"], ["--mezo-extensions", "no_such_mezo_extension"])]
    errors = []
    for proc in refused:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0
        errors.append(err)
    assert "--max-loras-per-batch 3 is too small" in errors[0] and "use at least 4" in errors[0]
    assert "--mezo-train-share must be in (0, 1], got 1.5" in errors[1]
    assert "--mezo-max-loaded-adapters must be >= 1, got 0" in errors[2]
    # An extension that cannot be imported stops the launch, before the model loads, named.
    assert "--mezo-extensions: extension module 'no_such_mezo_extension' was not found" in errors[3]


def test_without_the_flag_no_job_route_exists(tiny_llama, dirs):
    cpu = ["--device", "cpu", "--attention-backend", "torch_native", "--sampling-backend", "pytorch",
           "--disable-cuda-graph", "--max-total-tokens", "2048", "--dtype", "float32"]
    plain = Server(tiny_llama, dirs["data"], dirs["out"], str(dirs["root"] / "plain.log"), *cpu, mezo=False)
    try:
        for path in ("/v1/fine_tuning/jobs", "/v1/files"):
            assert plain.get(path).status_code == 404
        assert plain.post("/v1/fine_tuning/jobs", json={}).status_code in (404, 405)
        assert len(plain.greedy()) == len(PROMPTS)
        assert not os.listdir(dirs["out"])  # no store was made
    finally:
        plain.stop()


# ---------------------------------------------------------------- one server, many jobs


def test_auth_protects_job_and_file_routes(server):
    srv = server["server"]
    for method, path in (("get", "/v1/fine_tuning/jobs"), ("post", "/v1/fine_tuning/jobs"), ("get", "/v1/files"),
                         ("post", "/v1/files"), ("get", "/v1/fine_tuning/jobs/ftjob-x/events")):
        r = getattr(requests, method)(srv.url + path, timeout=30)
        assert r.status_code == 401, (path, r.status_code)
        r = getattr(requests, method)(srv.url + path, headers={"Authorization": "Bearer wrong"}, timeout=30)
        assert r.status_code == 401
    assert srv.get("/v1/fine_tuning/jobs").json() == {"object": "list", "data": [], "has_more": False}


def test_openai_client_upload_train_list_events_checkpoints_and_serve(server, dirs):
    srv = server["server"]
    client = _client(srv)
    with open(os.path.join(dirs["data"], "train.jsonl"), "rb") as f:
        uploaded = client.files.create(file=f, purpose="fine-tune")
    assert uploaded.filename == "train.jsonl" and uploaded.bytes > 0
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model=srv.model, training_file=uploaded.id, validation_file="dev.tsv", seed=7, suffix="tiny",
        metadata={"team": "a"},
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": "auto"}}},
        extra_body={"task": "sst-2", "label_words": {"0": "terrible", "1": "great"}, "eval_steps": 2},
    )
    assert job.status in ("queued", "running") and job.seed == 7 and job.metadata == {"team": "a"}
    deadline = time.monotonic() + 120
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft-tiny-{job.id[6:14]}"
    assert job.model_extra["steps_completed"] == job.model_extra["total_steps"] == 6  # 2 epochs * 12 / 4
    assert job.trained_tokens > 0 and job.model_extra["eval_accuracy"] is not None
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4

    # A second job, so that listing pages (limit=1 makes the client follow has_more/after).
    second = client.fine_tuning.jobs.create(model=srv.model, training_file="train.jsonl",
                                            hyperparameters={"n_epochs": 1, "batch_size": 6})
    second_done = srv.wait(second.id, ("succeeded",))
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=1)]
    assert listed[:2] == [second.id, job.id]

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    kinds = {e.type for e in events}
    assert kinds == {"message", "metrics"} and all(e.level in ("info", "warn", "error") for e in events)
    assert any(e.type == "metrics" and "train_loss" in e.data for e in events)
    assert any(e.type == "metrics" and "eval_accuracy" in e.data for e in events)
    assert "successfully completed" in events[0].message

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    steps = [c.step_number for c in checkpoints]  # one at every evaluation, the final one too, ...
    assert steps[:2] == [6, 4] and set(steps) <= {6, 4, 2, 0}  # ... of which the last two and the best are kept
    assert all(c.metrics.train_loss is not None for c in checkpoints)

    # Served at once: /v1/models, the OpenAI endpoints with "<base>:<name>", /generate's lora_path.
    names = {m.id for m in client.models.list()}
    assert {job.fine_tuned_model, second_done["fine_tuned_model"]} | {c.fine_tuned_model_checkpoint for c in checkpoints} <= names
    out = client.completions.create(model=f"{srv.model}:{job.fine_tuned_model}", prompt="it was", max_tokens=4,
                                    temperature=0)
    assert out.choices[0].text is not None
    for name in (job.fine_tuned_model, checkpoints[0].fine_tuned_model_checkpoint):
        r = srv.post("/generate", json={"text": "it was", "lora_path": name,
                                        "sampling_params": {"max_new_tokens": 4, "temperature": 0}})
        assert r.status_code == 200 and len(r.json()["output_ids"]) == 4, r.text
    results = srv.get(f"/v1/files/{job.result_files[0]}/content")
    assert results.status_code == 200 and results.text.startswith("step,train_loss")


def test_base_outputs_identical_before_during_after_a_job_pause_resume_cancel_queue(server):
    srv = server["server"]
    before = srv.greedy()
    long = {"model": srv.model, "training_file": "train.jsonl", "num_steps": 100000, "batch_size": 4,
            "eval_steps": 5000}
    first = srv.post("/v1/fine_tuning/jobs", json=long).json()
    second = srv.post("/v1/fine_tuning/jobs", json=long).json()
    srv.wait(first["id"], ("running",), steps=3)
    # Only one job trains at a time (--mezo-max-concurrent-jobs 1): the other waits.
    assert srv.job(second["id"])["status"] == "queued"
    during = []
    for _ in range(5):
        during.append(srv.greedy())
    progressed = srv.job(first["id"])["steps_completed"]
    assert all(d == before for d in during)
    assert progressed > 3  # training went on between the serving batches

    paused = srv.post(f"/v1/fine_tuning/jobs/{first['id']}/pause").json()
    assert paused["status"] == "paused"
    time.sleep(0.5)
    steps_paused = srv.job(first["id"])["steps_completed"]
    time.sleep(0.5)
    assert srv.job(first["id"])["steps_completed"] == steps_paused
    assert srv.greedy() == before
    assert srv.post(f"/v1/fine_tuning/jobs/{first['id']}/resume").json()["status"] == "running"
    srv.wait(first["id"], ("running",), steps=steps_paused + 2)

    for job in (second, first):
        cancelled = srv.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    again = srv.post(f"/v1/fine_tuning/jobs/{first['id']}/cancel")
    assert again.status_code == 400 and "already cancelled" in again.json()["error"]["message"]
    assert srv.greedy() == before
    # Every step logs an event, so on a fast machine the pause can be more than one page back:
    # the client's iterator walks all pages.
    events = {e.message for e in _client(srv).fine_tuning.jobs.list_events(first["id"], limit=100)}
    assert {"The job was paused", "The job was resumed", "The job was cancelled"} <= events


@pytest.mark.parametrize("body, status, needle, param", [
    ({"task": "nope"}, 400, "unknown task 'nope'", "task"),
    ({"label_words": {"0": "terrible", "1": "greatly wonderful"}}, 400, "each label word must be exactly one token",
     "label_words"),
    ({"training_file": "bad.jsonl"}, 400, "bad.jsonl, line 3: invalid JSON", "training_file"),
    ({"hyperparameters": {"n_epochs": 0}}, 400, "n_epochs must be 'auto' or a whole number >= 1",
     "hyperparameters.n_epochs"),
    ({"learning_rate": -1}, 400, "learning_rate must be >= 0", "learning_rate"),
    ({"hyperparameters": {"learning_rat": 0.1}}, 400, "did you mean 'learning_rate'", "hyperparameters.learning_rat"),
    ({"trainable": "full"}, 400, "would change the base model", "trainable"),
    ({"model": "gpt-4o"}, 400, "is not served here", "model"),
    ({"method": {"type": "dpo"}}, 400, "a dpo job needs preference pairs", "training_file"),
    ({"method": {"type": "reinforcement"}}, 400, "needs method.reinforcement.grader", "method.reinforcement.grader"),
    ({"method": {"type": "grpo"}}, 400, "method type 'grpo' is not supported", "method.type"),
    ({"lora_rank": 64}, 400, "more than this server's --max-lora-rank 8", "lora_rank"),
    ({"output_dir": "/tmp/x"}, 400, "cannot be set in a job", "output_dir"),
    ({"split_batch": True, "n_spsa": 4}, 400, "not one pair per direction", "split_batch"),
    ({"hyperparameters": {"split_batch": True}}, 400, "cannot be set in a job", "hyperparameters.split_batch"),
    ({"training_file": "file-000000000000000000000000"}, 404, "no such file", "training_file"),
    ({"training_file": "missing.jsonl"}, 404, "no such file", "training_file"),
])
def test_bad_requests_say_what_is_wrong(server, body, status, needle, param):
    srv = server["server"]
    r = srv.post("/v1/fine_tuning/jobs", json={"model": srv.model, "training_file": "train.jsonl", **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["param"] == param, error


def test_unknown_ids_and_bad_uploads(server):
    srv = server["server"]
    for path in ("/v1/fine_tuning/jobs/ftjob-000000000000000000000000", "/v1/fine_tuning/jobs/nope/events",
                 "/v1/fine_tuning/jobs/nope/checkpoints", "/v1/files/file-000000000000000000000000"):
        assert srv.get(path).status_code == 404, path
    assert srv.post("/v1/fine_tuning/jobs/ftjob-000000000000000000000000/cancel").status_code == 404
    for path in ("/v1/files/file-000000000000000000000000", "/v1/models/ft-nope-00000000"):
        assert requests.delete(srv.url + path, headers=AUTH, timeout=30).status_code == 404, path
    r = srv.post("/v1/files", files={"file": ("run.sh", b"rm -rf /")}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and "unsupported type" in r.json()["error"]["message"]
    r = srv.post("/v1/files", files={"file": ("x.jsonl", b'{"sentence": "a", "label": 1}\n')}, data={"purpose": "batch"})
    assert r.status_code == 400 and "purpose must be 'fine-tune'" in r.json()["error"]["message"]
    assert srv.post("/v1/fine_tuning/jobs", data="{not json").status_code == 400


def test_paths_outside_the_data_folder_are_refused(server, dirs):
    srv = server["server"]
    for ref, needle in (("../outside/secret.jsonl", "'..' is not allowed"),
                        (os.path.join(dirs["outside"], "secret.jsonl"), "absolute paths are not allowed"),
                        ("escape.jsonl", "leads out of the server's data folder"),
                        ("~/secret.jsonl", "absolute paths are not allowed")):
        for field in ("training_file", "validation_file"):
            body = {"model": srv.model, "training_file": "train.jsonl", field: ref}
            r = srv.post("/v1/fine_tuning/jobs", json=body)
            assert r.status_code == 400 and needle in r.json()["error"]["message"], (ref, field, r.text)
            assert r.json()["error"]["param"] == field
    # Outputs stay under --mezo-output-dir: a job's folder is named by the server, never by the request.
    assert all(p.startswith("ftjob-") for p in os.listdir(os.path.join(dirs["out"], "jobs")))


def test_failing_jobs_end_failed_and_the_server_stays_up(server, dirs):
    srv = server["server"]
    before = srv.greedy()
    # A loss that stops being a number.
    job = srv.post("/v1/fine_tuning/jobs", json={"model": srv.model, "training_file": "train.jsonl",
                                                 "num_steps": 50, "batch_size": 4, "learning_rate": 1e30}).json()
    failed = srv.wait(job["id"], ("failed", "succeeded"))
    assert failed["status"] == "failed" and failed["fine_tuned_model"] is None, failed
    assert failed["error"]["code"] in ("diverged", "training_error") and failed["error"]["message"]
    events = srv.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert events[0]["level"] == "error" and "The job failed" in events[0]["message"]

    # Bad data found late: the file changes between the request (checked) and the start (queued
    # behind a running job).
    late = os.path.join(dirs["data"], "late.jsonl")
    with open(os.path.join(dirs["data"], "train.jsonl")) as f:
        good = f.read()
    with open(late, "w") as f:
        f.write(good)
    blocker = srv.post("/v1/fine_tuning/jobs", json={"model": srv.model, "training_file": "train.jsonl",
                                                     "num_steps": 100000, "batch_size": 4}).json()
    srv.wait(blocker["id"], ("running",))
    queued = srv.post("/v1/fine_tuning/jobs", json={"model": srv.model, "training_file": "late.jsonl",
                                                    "num_steps": 5, "batch_size": 4})
    assert queued.status_code == 200, queued.text
    with open(late, "w") as f:
        f.write(good.splitlines()[0] + "\n{broken\n")
    assert srv.post(f"/v1/fine_tuning/jobs/{blocker['id']}/cancel").json()["status"] == "cancelled"
    late_job = srv.wait(queued.json()["id"], ("failed", "succeeded"))
    assert late_job["status"] == "failed" and late_job["error"]["code"] == "invalid_training_data"
    assert "late.jsonl, line 2: invalid JSON" in late_job["error"]["message"]
    assert str(dirs["data"]) not in late_job["error"]["message"]  # the server's own paths stay private

    assert srv.greedy() == before
    ok = srv.post("/v1/fine_tuning/jobs", json={"model": srv.model, "training_file": "train.jsonl",
                                                "num_steps": 3, "batch_size": 4}).json()
    assert srv.wait(ok["id"], ("succeeded", "failed"))["status"] == "succeeded"


def test_a_job_driven_to_diverge_is_noticed_and_hands_back_its_best_checkpoint(server):
    srv = server["server"]
    before = srv.greedy()
    job = srv.post("/v1/fine_tuning/jobs", json={
        "model": srv.model, "training_file": "train.jsonl", "validation_file": "dev.tsv", "seed": 3,
        "hyperparameters": {"batch_size": 8}, "num_steps": 24, "eval_steps": 4, "learning_rate": 2.0,
        "lora_rank": 4, "epsilon": 1e-2, "divergence_window": 3, "divergence_tolerance": 0.05,
        "label_words": {"0": "bad", "1": "good"}}).json()
    done = srv.wait(job["id"], ("succeeded", "failed"), timeout=300)
    assert done["status"] == "succeeded", done
    events = srv.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    warned = [e for e in events if e["level"] == "warn" and e["message"].startswith("Divergence")]
    assert warned and done["divergences"] and len(warned) == len(done["divergences"])
    checkpoints = srv.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    losses = {c["step_number"]: c["metrics"]["eval_loss"] for c in checkpoints}
    returned = done["returned_checkpoint"]
    assert returned["step"] == min(losses, key=losses.get) < 24, (returned, losses)
    assert any(f"weights of step {returned['step']}" in e["message"] for e in events)
    # What the job serves as its fine-tuned model answers as the returned checkpoint does.
    name = next(c["fine_tuned_model_checkpoint"] for c in checkpoints if c["step_number"] == returned["step"])

    def answers(model: str) -> list:
        r = srv.post("/generate", json={"text": PROMPTS, "lora_path": [model] * len(PROMPTS),
                                        "sampling_params": {"max_new_tokens": 8, "temperature": 0}})
        assert r.status_code == 200, r.text
        return [x["output_ids"] for x in r.json()]

    assert answers(done["fine_tuned_model"]) == answers(name)
    if returned["step"] == 0:  # the starting adapter (B = 0): the base model's answers
        assert answers(done["fine_tuned_model"]) == before
    assert srv.greedy() == before


# ---------------------------------------------------------------- a restart (last: it replaces the server)


def test_restart_lists_jobs_resumes_the_interrupted_one_exactly_and_serves_adapters_again(server, tiny_llama, dirs):
    srv = server["server"]
    done = [j for j in srv.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
            if j["status"] == "succeeded"]
    assert done
    body = {"model": srv.model, "training_file": "train.jsonl", "num_steps": 600, "batch_size": 4, "eval_steps": 20,
            "seed": 7}
    running = srv.post("/v1/fine_tuning/jobs", json=body).json()
    srv.wait(running["id"], ("running",), steps=41)
    before = {j["id"]: j["status"] for j in srv.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]}
    srv.kill()  # in the middle of the job, most likely in the middle of a step
    del server["server"]
    assert before[running["id"]] == "running"

    server["restarted"] = new = Server(tiny_llama, dirs["data"], dirs["out"], str(dirs["root"] / "server2.log"))
    after = {j["id"]: j for j in new.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]}
    assert set(after) == set(before)
    for job_id, status in before.items():
        if job_id != running["id"]:
            assert after[job_id]["status"] == status
    # The killed job goes on from its last checkpoint and ends as if it had never stopped: a
    # job with the same settings that ran through ends with the very same adapter.
    interrupted = new.wait(running["id"], ("succeeded", "failed"), timeout=300)
    assert interrupted["status"] == "succeeded", interrupted
    events = [e.message for e in _client(new).fine_tuning.jobs.list_events(running["id"], limit=100)]  # all pages
    assert any("resumes from its last checkpoint" in m for m in events)
    twin = new.post("/v1/fine_tuning/jobs", json=body).json()
    assert new.wait(twin["id"], ("succeeded", "failed"), timeout=300)["status"] == "succeeded"
    adapters = [load_file(os.path.join(dirs["out"], "jobs", j, "run", "adapter", "adapter_model.safetensors"))
                for j in (running["id"], twin["id"])]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(adapters[0][k].equal(adapters[1][k]) for k in adapters[0])
    # The job trained with the run spec's defaults, in the dtype the server serves in (on a CPU the
    # server's default follows the machine: bfloat16 where it is native, else float32).
    served = new.get("/server_info").json()["dtype"]
    assert served in ("float32", "bfloat16")
    trajectory = Trajectory.load(os.path.join(dirs["out"], "jobs", running["id"], "run"))
    recorded = MeZOConfig.from_record(trajectory.config)
    assert (recorded.dtype, recorded.lora_rank, recorded.update_rule) == (served, 2, "normalized")
    assert trajectory.dtype == served
    checkpoints = new.get(f"/v1/fine_tuning/jobs/{running['id']}/checkpoints").json()["data"]
    models = {m["id"] for m in new.get("/v1/models").json()["data"]}
    assert {j["fine_tuned_model"] for j in done} <= models
    assert checkpoints[0]["fine_tuned_model_checkpoint"] in models
    r = new.post("/generate", json={"text": "it was", "lora_path": done[0]["fine_tuned_model"],
                                    "sampling_params": {"max_new_tokens": 4, "temperature": 0}})
    assert r.status_code == 200, r.text
