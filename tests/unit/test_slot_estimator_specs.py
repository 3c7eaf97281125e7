"""What FZOO and HiZOO (the estimators that measure beside theta on LoRA slots) refuse alike: a
masked LM's default of every weight, the population form, and a server job that asks for either
(a job's adapter gets two LoRA slots; both need more). Each one's own refusals: test_fzoo.py and
test_hizoo.py."""

from __future__ import annotations

import json

import pytest

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.server.job_requests import parse_job_request
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import JobStore

SPECS = {"fzoo": {"estimator": "fzoo", "n_spsa": 4}, "hizoo": {"estimator": "hizoo"}}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_masked_lm_whose_default_is_every_weight_is_refused_once_resolved(name):
    with pytest.raises(ValueError, match=f"estimator='{name}' .* needs trainable='lora'"):
        MeZOConfig(**SPECS[name]).resolve("masked")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_the_population_form_is_another_estimator(name):
    grader = {"type": "string_check", "name": "same", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"}
    with pytest.raises(ValueError, match="reward_shaping='z-score' is another estimator"):
        MeZOConfig(estimator=name, n_spsa=4, objective="reward", task="reinforcement", grader=grader,
                   reward_shaping="z-score")


@pytest.mark.parametrize("hp, field, flag", [
    ({"estimator": "fzoo", "n_spsa": 4}, "estimator", "--estimator fzoo"),
    ({"estimator": "hizoo"}, "estimator", "--estimator hizoo"),
    ({"hessian_smoothing": 1e-6}, "hessian_smoothing", "--estimator hizoo"),
])
@pytest.mark.parametrize("where", ["top level", "hyperparameters", "method"])
def test_a_server_job_asking_for_one_gets_a_400_that_says_why(tmp_path, where, hp, field, flag):
    data = tmp_path / "data"
    data.mkdir()
    (data / "chats.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "hello"}]}) + "\n")
    settings = ServerSettings(output_dir=str(tmp_path / "out"), data_dir=str(data), model_path=str(tmp_path / "m"),
                              served_model_name="tiny")
    body = {"model": "tiny", "training_file": "chats.jsonl"}
    if where == "top level":
        body.update(hp)
    elif where == "hyperparameters":
        body["hyperparameters"] = hp
    else:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hp}}
    with pytest.raises(RequestError) as error:
        parse_job_request(body, settings, JobStore(settings.output_dir))
    assert error.value.status == 400 and error.value.param.endswith(field)
    assert f"'{field}' cannot be set in a job" in error.value.message
    assert "gets two" in error.value.message and flag in error.value.message
