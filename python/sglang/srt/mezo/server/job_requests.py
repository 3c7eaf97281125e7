"""A ``POST /v1/fine_tuning/jobs`` body checked into a run spec: OpenAI's fields and method, the
hyperparameters (OpenAI's three and the run spec's own), the data files, what the server decides
itself and refuses from a request; then, with the trainer's ``prepare``, the plan the job runs.

>>> parse_hyperparameter("n_epochs", "auto"), parse_hyperparameter("batch_size", 4)
(None, 4)

OpenAI's own training files (chat ``{"messages": [...]}`` rows, or ``{"prompt": ..., "completion": ...}``
rows) are told apart from classification rows by :func:`~.file_formats.file_format`; a job on one
trains with the run spec's ``completion`` objective (task ``chat``) unless the request names a task
or objective. A ``dpo`` job (``method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": ...}}}``)
trains the ``dpo`` objective on a file of preference pairs (OpenAI's dpo rows or TRL's
prompt/chosen/rejected). A ``reinforcement`` job (``method = {"type": "reinforcement",
"reinforcement": {"grader": {...}, "hyperparameters": {...}}}``) trains the ``reward`` objective on
prompts whose last message is the user's, each row's other fields read by the grader; grader and
rows are checked before the job is stored. This module imports neither torch nor SGLang.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from sglang.srt.mezo.data.graders.external import is_external
from sglang.srt.mezo.data.objective_table import ObjectiveEntry, objective_entry
from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.run_spec.config import MeZOConfig
from sglang.srt.mezo.server.file_formats import file_format
from sglang.srt.mezo.server.grader_requests import request_grader
from sglang.srt.mezo.server.settings import ServerSettings
from sglang.srt.mezo.server.store import DATA_SUFFIXES, JobStore
from sglang.srt.mezo.training.objectives import resolve_objective

# Settings a job body may carry (top level, via the openai client's extra_body, or inside
# hyperparameters), besides OpenAI's own fields.
OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


OPENAI_KEYS = ("model", "training_file", "validation_file", "hyperparameters", "method", "seed", "suffix",
               "metadata", "integrations")


# Run-spec fields that the server decides, never a request: where files are, what runs where.
SERVER_OWNED = {
    "model_path": "the model is the one this server serves: give it as 'model'",
    "train_file": "give the training data as 'training_file' (a file id or a path under --mezo-data-dir)",
    "eval_file": "give the validation data as 'validation_file' (a file id or a path under --mezo-data-dir)",
    "output_dir": "the server writes every job under --mezo-output-dir",
    "init_adapter": "a job starts from a new adapter",
    "device": "the job runs on the server's device", "dtype": "the job runs in the server's dtype",
    "max_total_tokens": "the job shares the server's KV cache", "progress_bar": "a server job has no progress bar",
    "exact_restore": "a server job always restores exactly", "paired_forward": "the server decides",
    "split_batch": "a server job gets two LoRA slots (its adapter and its -eps twin), not one pair per direction",
    "reward_shaping": "ES's population (reward_shaping 'z-score') needs a pair of LoRA slots per direction, and a "
                      "server job gets one pair",
    "estimator": "FZOO (estimator 'fzoo') and HiZOO (estimator 'hizoo') measure theta and each of their probes on a "
                 "LoRA slot of its own (n_spsa + 1 slots, and 2 * n_spsa + 1), and a server job gets two slots (its "
                 "adapter and its -eps twin); a job trains with MeZO's two-sided estimate (run FZOO or HiZOO with the "
                 "CLI, --estimator fzoo or --estimator hizoo, or mezo_mlm_finetune(estimator='fzoo' or 'hizoo'))",
    "hessian_smoothing": "it is HiZOO's (estimator 'hizoo'), which needs 2 * n_spsa + 1 LoRA slots, and a server job "
                         "gets two (its adapter and its -eps twin): run HiZOO with the CLI (--estimator hizoo "
                         "--hessian-smoothing A) or mezo_mlm_finetune(estimator='hizoo', hessian_smoothing=A)",
    "resume": "the server resumes an interrupted job by itself",
    "grader": "give the grader as method.reinforcement.grader (an object; a server reads no grader files)",
}


#: The run-spec fields a request may set (OpenAI's own keys aside): all that the server does not own.
MEZO_KEYS = tuple(f.name for f in dataclasses.fields(MeZOConfig)
                  if f.name not in SERVER_OWNED and f.name not in OPENAI_KEYS)


def parse_hyperparameter(name: str, value: Any) -> Any:
    """OpenAI's n_epochs / batch_size / learning_rate_multiplier: "auto" (None here) or a number."""
    if value is None or value == "auto":
        return None
    if name in ("n_epochs", "batch_size"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{name} must be 'auto' or a whole number >= 1, got {value!r}",
                               f"hyperparameters.{name}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RequestError(f"{name} must be 'auto' or a number > 0, got {value!r}", f"hyperparameters.{name}")
    return float(value)


#: OpenAI's fine-tuning methods this server trains (``method.type``).
METHODS = ("supervised", "dpo", "reinforcement")

#: OpenAI's reinforcement hyperparameters besides n_epochs / batch_size / learning_rate_multiplier, and
#: what each must be here (``eval_interval`` is the run spec's ``eval_steps``).
_REINFORCEMENT_ONLY = {
    "eval_samples": "'auto' or 1: a validation prompt is answered once, greedily",
    "compute_multiplier": "'auto': a MeZO step costs two generations of each prompt; set batch_size or n_epochs",
    "reasoning_effort": "'auto' or 'default': the model has no reasoning-effort setting",
}


def parse_beta(value: Any) -> Any:
    """DPO's beta: "auto" (None here: the run spec's default, 0.1) or a number > 0.

    >>> parse_beta("auto"), parse_beta(0.2)
    (None, 0.2)
    """
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RequestError(f"beta must be 'auto' or a number > 0 (DPO's temperature, default 0.1), got {value!r}",
                           "method.dpo.hyperparameters.beta")
    return float(value)


def _hyperparameter_sources(body: dict) -> dict:
    """Merge the hyperparameters of ``method`` (current) and top-level ``hyperparameters`` (older)."""
    merged: dict = {}
    top = body.get("hyperparameters")
    method = body.get("method")
    if top is not None and not isinstance(top, dict):
        raise RequestError("hyperparameters must be an object", "hyperparameters")
    sources = [("hyperparameters", top or {})]
    if method is not None:
        if not isinstance(method, dict):
            raise RequestError("method must be an object like {'type': 'supervised', 'supervised': {...}}", "method")
        kind = method.get("type", "supervised")
        if kind not in METHODS:
            raise RequestError(f"method type {kind!r} is not supported; MeZO jobs are 'supervised' (a chat or "
                               "prompt/completion file, or classification rows with label words), 'dpo' (a file "
                               "of preference pairs) or 'reinforcement' (prompts and a grader)", "method.type")
        unknown = set(method) - {"type", kind}
        if unknown:
            raise RequestError(f"method has unknown keys {sorted(unknown)}", "method")
        sup = method.get(kind) or {}
        keys = {"hyperparameters", "grader", "response_format"} if kind == "reinforcement" else {"hyperparameters"}
        if not isinstance(sup, dict) or set(sup) - keys:
            shape = "{'grader': {...}, 'hyperparameters': {...}}" if kind == "reinforcement" else \
                "{'hyperparameters': {...}}"
            raise RequestError(f"method.{kind} must be {shape}", f"method.{kind}")
        hp = sup.get("hyperparameters") or {}
        if not isinstance(hp, dict):
            raise RequestError(f"method.{kind}.hyperparameters must be an object", f"method.{kind}.hyperparameters")
        if kind != "dpo" and "beta" in hp:
            raise RequestError(f"beta is a hyperparameter of method 'dpo'; a {kind} job has none",
                               f"method.{kind}.hyperparameters.beta")
        if kind == "dpo" and "beta" in hp:
            hp = {**hp, "beta": parse_beta(hp["beta"])}
        if kind == "reinforcement":
            merged["grader"] = _reinforcement_grader(sup)
            hp = _reinforcement_hyperparameters(hp)
        sources.append((f"method.{kind}.hyperparameters", hp))
    for where, hp in sources:
        for key, value in hp.items():
            if key in SERVER_OWNED:
                raise RequestError(f"{key!r} cannot be set in a job: {SERVER_OWNED[key]}", f"{where}.{key}")
            if key not in OPENAI_HYPERPARAMETERS and key not in MEZO_KEYS:
                known = OPENAI_HYPERPARAMETERS + tuple(k for k in MEZO_KEYS if k not in OPENAI_HYPERPARAMETERS)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RequestError(f"unknown hyperparameter {key!r} in {where}{hint}; known: {', '.join(known)}",
                                   f"{where}.{key}")
            if key in merged and merged[key] != value:
                raise RequestError(f"hyperparameter {key!r} is given twice with different values "
                                   f"({merged[key]!r} and {value!r}); give it once", where)
            merged[key] = value
    if method is not None:
        _objective_of_method(merged, method.get("type", "supervised"), body.get("objective"))
    return merged


def _objective_of_method(hp: dict, method: str, top_level: Any) -> None:
    """The objective of a job whose ``method`` is given: the one it names (top level or in its
    hyperparameters), which must serve that method, else the method's own built-in one."""
    named = hp.get("objective", top_level)
    if named is None:
        if method != "supervised":
            hp["objective"] = METHOD_OBJECTIVES[method]
        return
    entry = _entry(named)
    if entry.openai_method != method:
        raise RequestError(f"objective {named!r} trains with method {entry.openai_method!r}, not {method!r}; set "
                           f"method.type to {entry.openai_method!r} or drop 'objective'", "method.type")


#: The built-in objective each OpenAI method trains when a job names none (supervised: by the files).
METHOD_OBJECTIVES = {"dpo": "dpo", "reinforcement": "reward"}


def _entry(name: Any) -> ObjectiveEntry:
    """The objective table's entry of a job's ``objective`` (a ``module:Class`` name imported), or a 400."""
    try:
        return objective_entry(resolve_objective(name))
    except (ValueError, TypeError) as e:
        raise RequestError(str(e), "objective") from e


def _reinforcement_grader(method: dict) -> dict:
    """method.reinforcement's grader, checked (unknown type, bad field, formula that does not parse:
    a 400 naming the field's path) and normalised."""
    if method.get("response_format") is not None:
        raise RequestError("response_format is not supported: answers are graded as the text the model writes",
                           "method.reinforcement.response_format")
    if method.get("grader") is None:
        raise RequestError('a reinforcement job needs method.reinforcement.grader, e.g. {"type": "string_check", '
                           '"name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", '
                           '"operation": "eq"}; try one with POST /v1/fine_tuning/alpha/graders/run',
                           "method.reinforcement.grader")
    return request_grader(method["grader"], "method.reinforcement.grader").to_dict()


def _external_rewards_only(hp: dict, eval_path: Optional[str]) -> None:
    """A job whose rewards come from its client (an external grader) validates nothing itself: no
    answer can be graded in the server, so its checkpoints are its steps' and it hands back the last."""
    why = ("an external grader's rewards come from the job's client, so the server cannot grade a validation "
           "answer; evaluate the checkpoints with your own client instead")
    if eval_path is not None:
        raise RequestError(f"validation_file: {why}. Leave validation_file out", "validation_file")
    if hp.get("validation_holdout") not in (None, 0, 0.0):
        raise RequestError(f"validation_holdout is {hp['validation_holdout']!r}: {why}. Leave it out (0)",
                           "validation_holdout")
    hp["validation_holdout"] = 0.0
    if hp.get("n_spsa") not in (None, 1):
        raise RequestError(f"n_spsa is {hp['n_spsa']!r}: a job whose rewards come from its client takes one "
                           "direction a step (one +eps and one -eps adapter to answer with); leave n_spsa at 1",
                           "n_spsa")


def _reinforcement_hyperparameters(hp: dict) -> dict:
    """OpenAI's reinforcement hyperparameters as the run spec's: eval_interval is eval_steps; the
    settings this server has no counterpart for are accepted at their defaults only."""
    where = "method.reinforcement.hyperparameters"
    out = {k: v for k, v in hp.items() if k not in _REINFORCEMENT_ONLY and k != "eval_interval"}
    for key, allowed in _REINFORCEMENT_ONLY.items():
        value = hp.get(key)
        if value not in (None, "auto") and not (key == "eval_samples" and value == 1) and \
                not (key == "reasoning_effort" and value == "default"):
            raise RequestError(f"{key} is {value!r}; here it must be {allowed}", f"{where}.{key}")
    interval = hp.get("eval_interval")
    if interval not in (None, "auto"):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise RequestError(f"eval_interval must be 'auto' or a whole number of steps >= 1, got {interval!r}",
                               f"{where}.eval_interval")
        if out.get("eval_steps") not in (None, interval):
            raise RequestError("give eval_interval or eval_steps, not both", f"{where}.eval_interval")
        out["eval_steps"] = interval
    return out


def resolve_data_file(ref: Any, param: str, settings: ServerSettings, store: JobStore) -> tuple[str, str]:
    """(absolute path, name to show) of a file id or a path relative to --mezo-data-dir.

    Paths are only read from inside the data folder: absolute paths, ``..`` and symlinks that
    lead out of it are refused.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise RequestError(f"{param} must be a file id (from POST /v1/files) or a path under the server's "
                           f"data folder, got {ref!r}", param)
    ref = ref.strip()
    if any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in ref):  # no file system takes either in a name
        raise RequestError(f"{param} {ref!r} holds a NUL byte or a lone surrogate, which no file name can; give a "
                           "file id (from POST /v1/files) or a path under the server's data folder", param)
    if ref.startswith("file-"):
        meta = store.get_file(ref)
        if meta is None:
            raise RequestError(f"{param}: no such file {ref!r}; upload it with POST /v1/files", param, 404)
        return store.file_path(meta), f"{ref} ({meta['filename']})"
    if settings.data_dir is None:
        raise RequestError(f"{param} {ref!r} is not a file id, and this server reads no paths (it was started "
                           "without --mezo-data-dir): upload the file with POST /v1/files", param)
    if os.path.isabs(ref) or ref.startswith("~"):
        raise RequestError(f"{param} {ref!r}: absolute paths are not allowed; give a path relative to the "
                           "server's data folder", param)
    parts = re.split(r"[\\/]+", ref)
    if ".." in parts:
        raise RequestError(f"{param} {ref!r}: '..' is not allowed; give a path inside the server's data folder",
                           param)
    root = os.path.realpath(settings.data_dir)
    path = os.path.realpath(os.path.join(root, ref))
    if os.path.commonpath([root, path]) != root:
        raise RequestError(f"{param} {ref!r} leads out of the server's data folder (a symlink?); only files "
                           "inside it can be read", param)
    if not os.path.isfile(path):
        raise RequestError(f"{param} {ref!r}: no such file in the server's data folder", param, 404)
    if os.path.splitext(path)[1].lower() not in DATA_SUFFIXES:
        raise RequestError(f"{param} {ref!r}: unsupported file type; use one of {', '.join(DATA_SUFFIXES)}", param)
    return path, ref


def _choose_objective(hp: dict, formats: Mapping[str, Optional[str]]) -> None:
    """Set the completion objective for OpenAI-format files (``formats``: param -> :func:`file_format`)
    when the request names neither task nor objective; refuse what cannot fit (mixed formats, a
    label-word job on a chat file) with a message, instead of the loader's row-level complaint.
    What fits is the objective table's: a file format is a row kind, an objective trains on some."""
    generative = {param: fmt for param, fmt in formats.items() if fmt is not None}
    entry = _entry(hp["objective"]) if hp.get("objective") is not None else None
    prompts = [param for param, fmt in generative.items() if fmt == "reinforcement"]
    if (entry is not None and entry.rows[0] == "prompts") or prompts:
        wrong = [param for param, fmt in formats.items() if fmt != "reinforcement"]
        if entry is None or entry.rows[0] != "prompts":
            raise RequestError(f"{prompts[0]} holds prompts whose last message is the user's (reinforcement rows); "
                               'train them with method {"type": "reinforcement", "reinforcement": {"grader": '
                               '{...}}}, or end each row with the assistant\'s answer for a supervised job',
                               "method.type")
        if wrong:
            raise RequestError(f"a reinforcement job needs prompts, but {wrong[0]} holds "
                               f"{formats[wrong[0]] or 'classification'} rows; give rows like "
                               '{"messages": [{"role": "user", "content": ...}], <the fields the grader reads>}, '
                               "the last message the user's", wrong[0])
        if hp.get("task") not in (None, "reinforcement"):
            raise RequestError(f"a reinforcement job trains task 'reinforcement' (the uploaded prompts), not "
                               f"{hp['task']!r}; drop 'task'", "task")
        return
    dpo = entry is not None and entry.rows[0] == "preferences"
    preference = [param for param, fmt in generative.items() if fmt == "preference"]
    if dpo or preference:
        wrong = [param for param, fmt in formats.items() if fmt != "preference"]
        if preference and not dpo:
            raise RequestError(f"{preference[0]} holds preference pairs; train them with method "
                               '{"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}', "method.type")
        if wrong:
            raise RequestError(f"a dpo job needs preference pairs, but {wrong[0]} holds "
                               f"{formats[wrong[0]] or 'classification'} rows; give rows like "
                               '{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", ...}], '
                               '"non_preferred_output": [...]} or {"prompt": ..., "chosen": ..., "rejected": ...}',
                               wrong[0])
        if hp.get("task") not in (None, "preference"):
            raise RequestError(f"a dpo job trains task 'preference' (the uploaded pairs), not {hp['task']!r}; "
                               "drop 'task'", "task")
        return
    if not generative:
        return
    train_fmt = formats.get("training_file")
    if "validation_file" in formats and (train_fmt is None) != (formats["validation_file"] is None):
        raise RequestError(f"training_file is {train_fmt or 'classification'} data but validation_file is "
                           f"{formats['validation_file'] or 'classification'} data; give both files in one kind "
                           "(chat or prompt/completion rows, or classification rows)", "validation_file")
    if hp.get("task") is None and entry is None:
        hp["objective"] = "completion"  # the run spec then takes task "chat": the user's own file
        return
    task = hp.get("task")
    if (entry is not None and "completions" not in entry.rows) or task not in (None, "chat"):
        param = "objective" if entry is not None and "completions" not in entry.rows else "task"
        value = hp["objective"] if param == "objective" else task
        where = next(iter(generative))
        raise RequestError(f"{where} holds OpenAI {generative[where]} rows, which train with objective "
                           f"'completion' (task 'chat'), not {param} {value!r}; drop {param!r} from the job, or "
                           "give classification rows such as {\"sentence\": ..., \"label\": 0}", param)
    if entry is None:
        hp["objective"] = "completion"


@dataclass
class JobRequest:
    """A job body, checked: the run spec (``config``, a :class:`MeZOConfig` dict without server-owned
    fields), the OpenAI fields, and what the data files are."""

    config: dict
    model: str
    training_file: str
    validation_file: Optional[str]
    train_path: str
    eval_path: Optional[str]
    display_names: dict
    seed: int
    suffix: Optional[str]
    metadata: Optional[dict]
    n_epochs: Optional[int] = None
    learning_rate_multiplier: Optional[float] = None
    given_hyperparameters: dict = field(default_factory=dict)


def parse_job_request(body: Any, settings: ServerSettings, store: JobStore) -> JobRequest:
    """Check a ``POST /v1/fine_tuning/jobs`` body (no model or tokenizer needed: see :func:`plan_job`)."""

    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for key in body:
        if key in SERVER_OWNED:
            raise RequestError(f"{key!r} cannot be set in a job: {SERVER_OWNED[key]}", key)
        if key not in OPENAI_KEYS and key not in MEZO_KEYS:
            close = difflib.get_close_matches(str(key), OPENAI_KEYS + MEZO_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RequestError(f"unknown field {key!r}{hint}; known fields: {', '.join(OPENAI_KEYS + MEZO_KEYS)}", key)
    model = body.get("model")
    served = {settings.served_model_name, settings.model_path}
    if not isinstance(model, str) or not model:
        raise RequestError(f"model is required: this server fine-tunes {settings.served_model_name!r}", "model")
    if model not in served:
        raise RequestError(f"model {model!r} is not served here: this server fine-tunes "
                           f"{settings.served_model_name!r}", "model")
    if body.get("integrations"):
        raise RequestError("integrations are not supported by this server", "integrations")
    if "training_file" not in body:
        raise RequestError("training_file is required", "training_file")
    train_path, train_name = resolve_data_file(body["training_file"], "training_file", settings, store)
    eval_path, eval_name = None, None
    if body.get("validation_file") is not None:
        eval_path, eval_name = resolve_data_file(body["validation_file"], "validation_file", settings, store)
    seed = body.get("seed", 42)
    if seed is None:
        seed = 42
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise RequestError(f"seed must be a whole number in [0, 2^31), got {seed!r}", "seed")
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", suffix)):
        raise RequestError(f"suffix must be 1-40 letters, digits, '-', '_' or '.', got {suffix!r}", "suffix")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()):
            raise RequestError("metadata must be an object of at most 16 string keys (<= 64 chars) and string "
                               "values (<= 512 chars)", "metadata")

    hp = _hyperparameter_sources(body)
    for key in MEZO_KEYS:
        if key in body:
            if key in hp and hp[key] != body[key]:
                raise RequestError(f"{key!r} is given twice with different values; give it once", key)
            hp[key] = body[key]
    if is_external(hp.get("grader")):
        _external_rewards_only(hp, eval_path)
    formats = {"training_file": file_format(train_path)}
    if eval_path is not None:
        formats["validation_file"] = file_format(eval_path)
    _choose_objective(hp, formats)
    n_epochs = parse_hyperparameter("n_epochs", hp.pop("n_epochs", None))
    multiplier = parse_hyperparameter("learning_rate_multiplier", hp.pop("learning_rate_multiplier", None))
    if "batch_size" in hp:
        hp["batch_size"] = parse_hyperparameter("batch_size", hp["batch_size"])
    if n_epochs is not None and hp.get("num_steps") is not None:
        raise RequestError("give n_epochs or num_steps, not both", "hyperparameters.n_epochs")
    if multiplier is not None and hp.get("learning_rate") is not None:
        raise RequestError("give learning_rate_multiplier or learning_rate, not both",
                           "hyperparameters.learning_rate_multiplier")
    if hp.get("trainable", "lora") == "full":
        raise RequestError("trainable='full' is refused: full-weight training would change the base model that "
                           "this server is serving to everyone. Server jobs train a LoRA adapter "
                           "(trainable='lora')", "trainable")
    if hp.get("lora_rank") is not None and isinstance(hp["lora_rank"], int) and hp["lora_rank"] > settings.max_lora_rank:
        raise RequestError(f"lora_rank {hp['lora_rank']} is more than this server's --max-lora-rank "
                           f"{settings.max_lora_rank}", "lora_rank")
    targets = hp.get("lora_target_modules")
    if targets is not None:
        names = [targets] if isinstance(targets, str) else list(targets) if isinstance(targets, (list, tuple)) else None
        names = [t.strip() for n in names for t in n.split(",")] if names is not None and \
            all(isinstance(n, str) for n in names) else None
        if not names or any(t not in settings.lora_target_modules for t in names):
            raise RequestError(f"lora_target_modules {targets!r} must be a subset of this server's "
                               f"--lora-target-modules {list(settings.lora_target_modules)}", "lora_target_modules")
        hp["lora_target_modules"] = names
    elif not set(("q_proj", "v_proj")) <= set(settings.lora_target_modules):
        hp["lora_target_modules"] = [t for t in settings.lora_target_modules]
    values = {k: v for k, v in hp.items() if v is not None}
    values.update(model_path=settings.model_path, seed=seed, progress_bar=False, trainable="lora")
    try:
        config = MeZOConfig.from_dict(values)
    except ValueError as e:
        raise RequestError(str(e), _param_of(str(e), given=hp)) from None
    except (TypeError, AttributeError) as e:  # a value of a type the run spec's checks did not expect
        param = _culprit(hp, settings)
        raise RequestError(f"{param or 'a setting'} has a value of the wrong type ({type(e).__name__}: {e}); "
                           f"see the run spec's fields for what each takes", param) from None
    return JobRequest(
        config=config.to_dict(), model=model, training_file=body["training_file"],
        validation_file=body.get("validation_file"), train_path=train_path, eval_path=eval_path,
        display_names={train_path: train_name, **({eval_path: eval_name} if eval_path else {})},
        seed=seed, suffix=suffix, metadata=metadata, n_epochs=n_epochs, learning_rate_multiplier=multiplier,
        given_hyperparameters={k: v for k, v in hp.items() if k in ("batch_size",)},
    )


def _param_of(message: str, given: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The body field an error message from the run spec is about: by the message's own pattern, else
    the first of the request's settings (``given``) that the message names."""
    for prefix, param in (("unknown task", "task"), ("label word", "label_words"), ("template", "template")):
        if message.startswith(prefix):
            return param
    m = re.match(r"unknown setting '([a-z_]+)'|([a-z_]+) must", message)
    if m:
        return m.group(1) or m.group(2)
    named = [(m.start(), key) for key in given or () for m in [re.search(rf"\b{re.escape(key)}\b", message)] if m]
    return min(named)[1] if named else None


def _culprit(given: Mapping[str, Any], settings: ServerSettings) -> Optional[str]:
    """The first of a request's settings that the run spec refuses on its own (None: only together)."""
    for key, value in given.items():
        if value is None:
            continue
        try:
            MeZOConfig.from_dict({"model_path": settings.model_path or "model", key: value})
        except Exception:  # noqa: BLE001 - whatever it raises, this is the setting it raises on
            return key
    return None


def describe_error(e: BaseException, display_names: Mapping[str, str]) -> str:
    """An error's message with the server's own file paths replaced by the names the user gave."""
    message = " ".join(str(e).split())
    for path, name in sorted(display_names.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(path, name)
    return message


def plan_job(req: JobRequest, prepare: Callable) -> tuple[Any, dict]:
    """Resolve a checked request with the trainer's ``prepare`` (tokenizer, prompt, data): the plan
    and the MeZOConfig dict to run, with OpenAI's n_epochs / learning_rate_multiplier applied (the
    multiplier scales the default learning rate of the job's model kind and objective).

    Raises :class:`RequestError` with the data file named as the user named it."""

    config = MeZOConfig.from_dict(req.config)
    eval_source = req.eval_path if req.eval_path is not None else []

    def run_prepare(cfg):
        try:
            return prepare(cfg, req.train_path, eval_source)
        except (ValueError, OSError, TypeError) as e:  # DataFormatError is a ValueError
            param = "validation_file" if req.eval_path and req.eval_path in str(e) else \
                "training_file" if req.train_path in str(e) else _param_of(str(e))
            raise RequestError(describe_error(e, req.display_names), param) from None
        except Exception as e:
            # A chat template may raise its own error (jinja2's TemplateError, e.g. "roles must
            # alternate") on a row it refuses: that is the file's fault, so a 400, not a 500.
            if type(e).__module__.split(".")[0] != "jinja2":
                raise
            files = "training or validation file" if req.eval_path else "training file"
            raise RequestError(f"the model's chat template refused a row of the {files}: "
                               f"{describe_error(e, req.display_names)}", "training_file") from None

    plan = run_prepare(config)
    changed = {}
    if req.learning_rate_multiplier is not None:
        # A request gives the multiplier or learning_rate, never both: the plan's lr is the default.
        changed["learning_rate"] = plan.config.learning_rate * req.learning_rate_multiplier
    if req.n_epochs is not None:
        changed["num_steps"] = max(1, math.ceil(req.n_epochs * len(plan.train) / plan.config.batch_size))
    if changed:
        config = dataclasses.replace(config, **changed)
        plan = run_prepare(config)
    if plan.config.num_steps < 1:
        raise RequestError("num_steps must be >= 1 for a fine-tuning job", "num_steps")
    # Every default resolved: the job runs (and, after a restart, resumes) with these values.
    return plan, plan.config.to_dict()

