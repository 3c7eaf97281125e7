"""A job's record as OpenAI's API shows it: job objects, checkpoints, file objects (an upload's, a
job's results file's), pages of a list, the hyperparameters a job ran with. Its metrics under
OpenAI's names are in :mod:`.openai_metrics`."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from sglang.srt.mezo.data.objective_table import objective_entry
from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.run_spec.defaults import default_table
from sglang.srt.mezo.server.store import QUEUED, SUCCEEDED


# ---------------------------------------------------------------- the job object (OpenAI's shape)
def job_status(request: dict, state: dict) -> str:
    return state.get("status") or QUEUED


def job_object(request: dict, state: dict, deleted: Optional[Mapping[str, int]] = None) -> dict:
    """``fine_tuning.job`` as OpenAI returns it, plus MeZO's progress fields; ``deleted``: the
    job's models deleted since (name -> when), from the store."""
    status = job_status(request, state)
    deleted = deleted or {}
    succeeded = status == SUCCEEDED
    return {
        "object": "fine_tuning.job",
        "id": request["id"],
        "model": request["model"],
        "created_at": request["created_at"],
        "finished_at": state.get("finished_at"),
        "status": status,
        "error": state.get("error"),
        "fine_tuned_model": request["fine_tuned_model"] if succeeded else None,
        "organization_id": "sglang-mezo",
        "result_files": state.get("result_files", []),
        "seed": request["seed"],
        "trained_tokens": state.get("trained_tokens") if succeeded else None,
        "training_file": request["training_file"],
        "validation_file": request.get("validation_file"),
        "hyperparameters": state.get("hyperparameters") or request["hyperparameters"],
        "method": method_object(request, state.get("hyperparameters") or request["hyperparameters"]),
        "metadata": request.get("metadata"),
        "suffix": request.get("suffix"),
        "user_provided_suffix": request.get("suffix"),
        "estimated_finish": state.get("estimated_finish"),
        "integrations": [],
        # MeZO's own progress (the openai client exposes these as extra fields)
        "steps_completed": state.get("step", 0),
        "total_steps": state.get("num_steps", request.get("num_steps")),
        "train_loss": state.get("train_loss"),
        "eval_accuracy": state.get("eval_accuracy"),  # classification jobs; None for chat jobs
        "eval_loss": state.get("eval_loss"),
        "train_mean_token_accuracy": state.get("train_mean_token_accuracy"),  # chat jobs; None otherwise
        "valid_mean_token_accuracy": state.get("valid_mean_token_accuracy"),
        "mezo": request.get("config"),
        "fine_tuned_model_deleted": succeeded and request["fine_tuned_model"] in deleted,
        # The safeguards: which step's weights the fine-tuned model is and why, what diverged
        "returned_checkpoint": state.get("returned"),
        "divergences": state.get("divergences", []),
        "stop_reason": state.get("stop_reason"),
        "held_out_for_validation": state.get("held_out"),
    }


def method_object(request: dict, hyperparameters: dict) -> dict:
    """OpenAI's ``method`` of a job: ``dpo`` (with its ``beta``) for a job on preference pairs,
    ``reinforcement`` (with its grader) for a reward job, else ``supervised``.

    >>> method_object({"config": {"objective": "dpo", "beta": 0.1}}, {"batch_size": 8})
    {'type': 'dpo', 'dpo': {'hyperparameters': {'batch_size': 8, 'beta': 0.1}}}
    >>> method_object({"config": {"objective": "reward", "grader": {"type": "multi"}}}, {"eval_steps": 5})["reinforcement"]
    {'grader': {'type': 'multi'}, 'hyperparameters': {'eval_steps': 5, 'eval_interval': 5, 'eval_samples': 1}}
    """
    config = request.get("config") or {}
    method = openai_method(config.get("objective"))
    if method == "dpo":
        return {"type": "dpo", "dpo": {"hyperparameters": {**hyperparameters, "beta": config.get("beta")}}}
    if method == "reinforcement":
        hp = {**hyperparameters, "eval_interval": hyperparameters.get("eval_steps"), "eval_samples": 1}
        return {"type": "reinforcement", "reinforcement": {"grader": config.get("grader"), "hyperparameters": hp}}
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


def openai_method(objective: Optional[str]) -> str:
    """The OpenAI method of a job's objective (the objective table's); a job whose objective this
    process does not know (a user's, from an extension not loaded now) still lists, as supervised.

    >>> openai_method("dpo"), openai_method("ce"), openai_method("not_loaded_here")
    ('dpo', 'supervised', 'supervised')
    """
    try:
        return objective_entry(objective or "ce").openai_method
    except ValueError:
        return "supervised"


def checkpoint_objects(request: dict, state: dict, deleted: Optional[Mapping[str, int]] = None) -> list[dict]:
    """Newest first, as OpenAI lists them; a deleted one says so (``deleted``: name -> when)."""
    out = []
    deleted = deleted or {}
    for ckpt in state.get("checkpoints", []):
        out.append({
            "object": "fine_tuning.job.checkpoint",
            "id": f"ftckpt-{request['id'][6:]}-{ckpt['step']}",
            "created_at": ckpt["created_at"],
            "fine_tuned_model_checkpoint": ckpt["name"],
            "fine_tuning_job_id": request["id"],
            "step_number": ckpt["step"],
            "metrics": ckpt.get("metrics", {}),
            "deleted": ckpt["name"] in deleted,
        })
    return out[::-1]


def page(items: list[dict], after: Optional[str], limit: Optional[str | int], default: int = 20) -> dict:
    """OpenAI's cursor list: items after the one with id ``after``, at most ``limit``, and has_more."""
    try:
        n = default if limit in (None, "") else int(limit)
    except (TypeError, ValueError):
        raise RequestError(f"limit must be a whole number, got {limit!r}", "limit") from None
    if not 1 <= n <= 100:
        raise RequestError(f"limit must be between 1 and 100, got {n}", "limit")
    start = 0
    if after:
        ids = [it["id"] for it in items]
        if after not in ids:
            raise RequestError(f"after={after!r} is not an id in this list", "after")
        start = ids.index(after) + 1
    chunk = items[start:start + n]
    return {"object": "list", "data": chunk, "has_more": start + n < len(items)}


def openai_hyperparameters(plan: Any) -> dict:
    """The resolved run in OpenAI's three hyperparameters (plus MeZO's own)."""
    c = plan.config
    n_train = max(len(plan.train), 1)
    base_lr = default_table(plan.kind, c.trainable, c.objective)["learning_rate"]
    return {
        "n_epochs": _number(c.num_steps * c.batch_size / n_train),
        "batch_size": c.batch_size,
        "learning_rate_multiplier": c.learning_rate / base_lr if base_lr else None,
        "num_steps": c.num_steps, "learning_rate": c.learning_rate, "epsilon": c.epsilon,
        "lora_rank": c.lora_rank, "eval_steps": c.eval_steps, "k_shot": c.k_shot,
    }


def _number(x: float):
    return int(round(x)) if abs(x - round(x)) < 1e-9 else round(x, 3)


#: A succeeded job's results file is ``file-results-<the job id's hex>``: it is not an upload but
#: the job's ``results.csv`` in the store, listed in the job's ``result_files``.
RESULTS_FILE_PREFIX = "file-results-"


def results_file_id(job_id: str) -> str:
    """
    >>> results_file_id("ftjob-0123456789abcdef01234567")
    'file-results-0123456789abcdef01234567'
    """
    return RESULTS_FILE_PREFIX + job_id[len("ftjob-"):]


def results_job_id(file_id: str) -> Optional[str]:
    """The job whose results file ``file_id`` names (None: not a results file's id).

    >>> results_job_id("file-results-0123456789abcdef01234567"), results_job_id("file-0123")
    ('ftjob-0123456789abcdef01234567', None)
    """
    if not file_id.startswith(RESULTS_FILE_PREFIX):
        return None
    return "ftjob-" + file_id[len(RESULTS_FILE_PREFIX):]


def results_file_object(file_id: str, content: str, request: dict, state: dict) -> dict:
    """OpenAI's ``file`` object of a job's results CSV (``content``)."""
    return {"id": file_id, "object": "file", "bytes": len(content.encode()),
            "created_at": state.get("finished_at") or request["created_at"], "filename": "step_metrics.csv",
            "purpose": "fine-tune-results", "status": "processed", "status_details": None}


def file_object(meta: dict) -> dict:
    """OpenAI's ``file`` object of an upload: its record in the store without what only the store reads.

    >>> file_object({"id": "file-1", "object": "file", "suffix": ".jsonl"})
    {'id': 'file-1', 'object': 'file'}
    """
    return {k: v for k, v in meta.items() if k != "suffix"}
