"""A server that runs for months: deleting files and models, adapters served on demand within a
bound, checkpoint retention, the upload limit, and a soak of 20 jobs in a row on one server.

One server for the module (a tiny random Llama, 127.0.0.1, a free port, ``--api-key``) started with
small bounds: at most 3 loaded adapters, 1 checkpoint kept besides the best, uploads up to 1 MiB.
Nothing of SGLang is mocked; the fixture stops the server.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
from test_server import AUTH, KEY, Server, labelled_folders

MAX_LOADED = 3
UPLOAD_MIB = 1


@pytest.fixture(scope="module")
def months(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("mezo_months")
    data, out, rows = labelled_folders(root)
    (data / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    template = root / "plain.jinja"  # the tiny tokenizer has no chat template
    template.write_text("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    srv = Server(tiny_llama, str(data), str(out), str(root / "server.log"), "--chat-template", str(template),
                 "--mezo-max-loaded-adapters", str(MAX_LOADED), "--mezo-keep-checkpoints", "1",
                 "--mezo-max-upload-mb", str(UPLOAD_MIB))
    try:
        yield {"server": srv, "data": str(data), "out": str(out)}
    finally:
        srv.stop()


def _client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _delete(srv: Server, path: str):
    return requests.delete(srv.url + path, headers=AUTH, timeout=60)


def _job_models(srv: Server) -> list[dict]:
    r = srv.get("/v1/models")
    assert r.status_code == 200, r.text
    return [m for m in r.json()["data"] if m.get("fine_tuning_job_id")]


def _loaded(srv: Server) -> int:
    return sum(m["loaded"] for m in _job_models(srv))


def _store_files(out: str) -> list[str]:
    return sorted(os.listdir(os.path.join(out, "files")))


def _short_job(srv: Server, **extra) -> dict:
    body = {"model": srv.model, "training_file": "train.jsonl", "validation_file": "dev.jsonl", "num_steps": 4,
            "batch_size": 4, "eval_steps": 2, "max_eval_examples": 4, **extra}
    r = srv.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _chat(client, model: str) -> str:
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "it was"}],
                                         max_tokens=2, temperature=0)
    return out.choices[0].message.content


# ---------------------------------------------------------------- the upload limit


def test_uploads_over_the_limit_get_413_and_leave_nothing(months):
    srv, out = months["server"], months["out"]
    before = _store_files(out)
    line = json.dumps({"sentence": "a great movie " * 4, "label": 1}) + "\n"
    big = (line * (2 * UPLOAD_MIB * 2**20 // len(line) + 1)).encode()
    # Content-Length says it: refused before the body is read.
    r = srv.post("/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"})
    assert r.status_code == 413, r.text
    message = r.json()["error"]["message"]
    assert f"{UPLOAD_MIB * 2**20} bytes" in message and "--mezo-max-upload-mb" in message
    # No Content-Length (a chunked body): stopped once past the limit.
    boundary = "mezo-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--{boundary}\r\n"
            "Content-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\r\n").encode()

    def chunks():
        yield head
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = requests.post(srv.url + "/v1/files", data=chunks(), timeout=60,
                      headers={**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "--mezo-max-upload-mb" in r.json()["error"]["message"], r.text
    # The openai client sees it as an error with the status.
    with pytest.raises(openai.APIStatusError) as info:
        _client(srv).files.create(file=("big.jsonl", big), purpose="fine-tune")
    assert info.value.status_code == 413
    assert _store_files(out) == before  # nothing half-written
    assert srv.greedy()  # and the server serves on


# ---------------------------------------------------------------- deleting: 409, 404, the openai client


def test_delete_refuses_what_a_job_uses_then_deletes_with_the_openai_client(months):
    srv, out = months["server"], months["out"]
    client = _client(srv)
    with open(os.path.join(months["data"], "train.jsonl"), "rb") as f:
        upload = client.files.create(file=f, purpose="fine-tune")
    long = srv.post("/v1/fine_tuning/jobs", json={"model": srv.model, "training_file": upload.id,
                                                  "num_steps": 100000, "batch_size": 4, "eval_steps": 2}).json()
    srv.wait(long["id"], ("running",), steps=3)
    r = _delete(srv, f"/v1/files/{upload.id}")
    assert r.status_code == 409, r.text
    assert long["id"] in r.json()["error"]["message"] and "running" in r.json()["error"]["message"]
    adapter = f"ft-mezo-{long['id'][6:14]}"  # the job object names it once the job has succeeded
    for name in (adapter, f"{adapter}-step-2"):
        r = _delete(srv, f"/v1/models/{name}")
        assert r.status_code == 409 and "cancel the job or wait for it to end" in r.json()["error"]["message"], r.text
    with pytest.raises(openai.ConflictError):
        client.files.delete(upload.id)
    assert srv.post(f"/v1/fine_tuning/jobs/{long['id']}/pause").json()["status"] == "paused"
    r = _delete(srv, f"/v1/models/{adapter}")
    assert r.status_code == 409 and "which is paused" in r.json()["error"]["message"], r.text
    assert srv.post(f"/v1/fine_tuning/jobs/{long['id']}/cancel").json()["status"] == "cancelled"

    deleted = client.files.delete(upload.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (upload.id, True, "file")
    assert not [n for n in _store_files(out) if n.startswith(upload.id)]
    assert upload.id not in [f.id for f in client.files.list()]
    # Unknown ids: 404, as the other routes answer them.
    for path in (f"/v1/files/{upload.id}", "/v1/files/file-000000000000000000000000", "/v1/models/ft-nope-00000000"):
        assert _delete(srv, path).status_code == 404, path
    with pytest.raises(openai.NotFoundError):
        client.files.delete(upload.id)
    with pytest.raises(openai.NotFoundError):
        client.models.delete("ft-nope-00000000")
    r = _delete(srv, f"/v1/models/{srv.model}")
    assert r.status_code == 400 and "base model" in r.json()["error"]["message"]

    # A cancelled job's checkpoint is a model like any other: deletable, its folder removed.
    ckpts = srv.get(f"/v1/fine_tuning/jobs/{long['id']}/checkpoints").json()["data"]
    assert ckpts and len(ckpts) <= 2  # the last and the best (--mezo-keep-checkpoints 1)
    name = ckpts[0]["fine_tuned_model_checkpoint"]
    step_dir = os.path.join(out, "jobs", long["id"], "run", "checkpoints", f"step-{ckpts[0]['step_number']:06d}")
    assert os.path.isdir(step_dir)
    gone = client.models.delete(name)
    assert (gone.id, gone.deleted, gone.object) == (name, True, "model")
    assert not os.path.exists(step_dir) and name not in {m.id for m in client.models.list()}
    listed = srv.get(f"/v1/fine_tuning/jobs/{long['id']}/checkpoints").json()["data"]
    assert [c["deleted"] for c in listed if c["fine_tuned_model_checkpoint"] == name] == [True]
    assert _delete(srv, f"/v1/models/{name}").status_code == 404


# ---------------------------------------------------------------- the soak


@pytest.mark.soak
def test_soak_20_jobs_in_a_row_bounded_adapters_all_served_deleting_frees(months):
    srv, out = months["server"], months["out"]
    client = _client(srv)
    started = time.monotonic()
    jobs = []
    for i in range(20):
        job = srv.wait(_short_job(srv, seed=i)["id"], ("succeeded", "failed"))
        assert job["status"] == "succeeded", job
        jobs.append(job)
        assert _chat(client, job["fine_tuned_model"]) is not None  # model="<name>", as OpenAI's clients send it
        assert _loaded(srv) <= MAX_LOADED
    listed = {m["id"] for m in _job_models(srv)}
    assert {j["fine_tuned_model"] for j in jobs} <= listed  # all listed, loaded or not
    assert _loaded(srv) <= MAX_LOADED
    first, last = jobs[0], jobs[-1]
    loaded_now = {m["id"] for m in _job_models(srv) if m["loaded"]}
    assert first["fine_tuned_model"] not in loaded_now  # long since unloaded ...
    assert _chat(client, first["fine_tuned_model"]) is not None  # ... and loaded again on demand
    assert _chat(client, f"{srv.model}:{last['fine_tuned_model']}") is not None
    assert client.models.retrieve(last["fine_tuned_model"]).model_extra["fine_tuning_job_id"] == last["id"]
    r = srv.post("/generate", json={"text": "it was", "lora_path": jobs[5]["fine_tuned_model"],
                                    "sampling_params": {"max_new_tokens": 2, "temperature": 0}})
    assert r.status_code == 200, r.text
    assert _loaded(srv) <= MAX_LOADED
    # Requests for six adapters at once, twice the bound: each waits for a loaded one to be given back.
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda job: _chat(client, job["fine_tuned_model"]), jobs[6:12]))
    assert all(a is not None for a in answers) and _loaded(srv) <= MAX_LOADED

    # Retention: the last checkpoint and the best one, no more, on disk as in the listing.
    for job in (first, last):
        steps = [c["step_number"] for c in srv.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]]
        on_disk = sorted(int(n[5:]) for n in os.listdir(os.path.join(out, "jobs", job["id"], "run", "checkpoints"))
                         if n.startswith("step-"))
        assert steps[0] == 4 and len(steps) <= 2 and sorted(steps) == on_disk, (steps, on_disk)

    # Deleting the first adapter frees it: unloaded, folder gone, not listed, not served; the job stays.
    name = first["fine_tuned_model"]
    adapter_dir = os.path.join(out, "jobs", first["id"], "run", "adapter")
    assert os.path.isdir(adapter_dir)
    assert client.models.delete(name).deleted is True
    assert not os.path.exists(adapter_dir)
    assert name not in {m["id"] for m in _job_models(srv)}
    record = srv.job(first["id"])
    assert record["status"] == "succeeded" and record["fine_tuned_model_deleted"] is True
    r = srv.post("/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "hi"}],
                                               "max_tokens": 1})
    assert r.status_code == 404 and "was deleted" in r.json()["error"]["message"], r.text
    assert _chat(client, last["fine_tuned_model"]) is not None  # the others are served on
    assert time.monotonic() - started < 170
