"""Data-parallel MeZO over torch.distributed, and the layouts that make noise shard-consistent.

**Data parallelism.** N worker processes (``torchrun``, or ``--nproc N`` on the CLI, which runs
torchrun for you), each with its own SGLang ModelRunner, run the same MeZO run: the same step
seeds and the same global batch order (every worker's BatchSampler is seeded alike). Each worker
computes L+ and L- on its contiguous shard of the step's global batch; the workers exchange
``(shard size, shard size * L+, shard size * L-)`` per seed and every worker forms the same
shard-size-weighted mean, so all of them apply the identical update. What crosses the network per
step is ``1 + 2 * n_spsa`` float64 numbers from each worker, plus a start-up broadcast of rank 0's
run position (and its LoRA adapter) and a fingerprint check of the run spec and data.

The group lives beside SGLang's own torch.distributed state, not in it: SGLang's ModelRunner makes
the process's default group itself (a world of size 1 for tp=1). The data-parallel group is a
standalone :class:`torch.distributed.ProcessGroupGloo` on a ``TCPStore`` at torchrun's
``MASTER_ADDR:MASTER_PORT`` (under a key prefix of its own), and the torchrun variables are taken
out of the environment before SGLang starts, whose own world-of-1 group then rendezvouses through
a private file store (no port to collide on between two runners of one machine).

Rank 0 evaluates, saves checkpoints and logs; the other workers have no evaluation data, no output
folder and no progress bar (they wait for rank 0 in the next step's exchange). A worker that dies
or stops answering makes the others stop with :class:`WorkerFailure`, which names it, after at most
``timeout`` seconds (at once when its process is gone). Resume goes through rank 0: it restores
its latest checkpoint and broadcasts the run position and adapter to the others.

Example (``torchrun --nproc-per-node 2 -m sglang.srt.mezo_mlm_trainer ...`` does the same)::

    >>> group = DataParallelGroup(WorkerEnv.from_environ())  # doctest: +SKIP
    >>> mezo_run = start_worker_run(prepare(spec), group)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import socket
import time
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from sglang.srt.mezo.errors import WorkerFailure
from sglang.srt.mezo.parallel.launch import WorkerEnv
from sglang.srt.mezo.training.plan import start_run
from sglang.srt.mezo.zo.trajectory import Trajectory

logger = logging.getLogger(__name__)


DEFAULT_TIMEOUT_S = 1800.0


#: Settings that may differ between the workers of one run (rank 0's are the ones that count).
PER_WORKER_SETTINGS = ("output_dir", "resume", "progress_bar", "device")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: dead all the same
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


class DataParallelGroup:
    """A gloo group of the data-parallel workers, apart from SGLang's default group.

    ``timeout`` (seconds) bounds every exchange: rank 0's evaluations and saves happen while the
    others wait in the next one, so it must be longer than those.
    """

    def __init__(self, env: WorkerEnv, timeout: float = DEFAULT_TIMEOUT_S, backend: str = "gloo"):
        if backend != "gloo":
            # The exchanged numbers are a few host scalars: gloo carries them on GPU machines too.
            raise ValueError(f"data-parallel MeZO exchanges host scalars over gloo; backend {backend!r} is not used")
        self.env, self.rank, self.world_size, self.timeout = env, env.rank, env.world_size, float(timeout)
        delta = datetime.timedelta(seconds=self.timeout)
        is_master = env.rank == 0 and not env.agent_store
        try:
            store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master, delta,
                                  wait_for_workers=False)
        except Exception as e:  # noqa: BLE001
            raise WorkerFailure(f"data-parallel worker {env.rank}: cannot reach the group's store at "
                                f"{env.master_addr}:{env.master_port} ({e})") from e
        self.store = dist.PrefixStore("sglang-mezo-dp/", store)
        self.pg = dist.ProcessGroupGloo(self.store, env.rank, env.world_size, delta)
        self.bytes_sent = 0  # payload bytes this worker has put on the wire
        self.exchanges = 0
        self.step = None  # the step under way, for error messages
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.peers = [json.loads(row) for row in self.gather_bytes(json.dumps(me).encode(), "start-up")]

    # ---- the exchanges

    def _fail(self, what: str, error: BaseException, waited: float = 0.0) -> WorkerFailure:
        host = socket.gethostname()
        gone = [f"worker {r} (pid {p['pid']})" for r, p in enumerate(getattr(self, "peers", []))
                if r != self.rank and p["host"] == host and not _pid_alive(p["pid"])]
        at = f" at step {self.step}" if self.step is not None else ""
        if gone:
            cause = f"{' and '.join(gone)} {'is' if len(gone) == 1 else 'are'} no longer running"
        elif waited >= 0.9 * self.timeout:
            cause = f"no answer from the other workers within the {self.timeout:g} s timeout"
        else:
            cause = f"the connection to another worker broke after {waited:.1f} s (it died or failed)"
        return WorkerFailure(f"data-parallel worker {self.rank} of {self.world_size}: the {what} exchange{at} "
                             f"failed: {cause} ({' '.join(str(error).split())[:300]}). This worker stops; "
                             "restart all workers with --resume to continue from the last checkpoint")

    def _wait(self, work, what: str) -> None:
        started = time.monotonic()
        try:
            work.wait()
        except Exception as e:  # noqa: BLE001 - gloo raises RuntimeError (and subclasses) on a lost peer
            raise self._fail(what, e, time.monotonic() - started) from e

    def all_gather_floats(self, values: Sequence[float], what: str = "step") -> list[list[float]]:
        """Every worker's ``values`` (float64), in rank order, on every worker."""
        mine = torch.tensor(list(values), dtype=torch.float64)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._wait(self.pg.allgather([out], [mine]), what)
        self.bytes_sent += mine.numel() * mine.element_size()
        self.exchanges += 1
        return [row.tolist() for row in out]

    def gather_bytes(self, payload: bytes, what: str) -> list[bytes]:
        sizes = self.all_gather_floats([len(payload)], what)
        width = int(max(s[0] for s in sizes))
        mine = torch.zeros(width, dtype=torch.uint8)
        if payload:
            mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        out = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._wait(self.pg.allgather([out], [mine]), what)
        self.bytes_sent += width
        return [bytes(o[: int(s[0])].tolist()) for o, s in zip(out, sizes)]

    def broadcast_bytes(self, payload: Optional[bytes], what: str = "start-up") -> bytes:
        """Rank 0's ``payload`` on every worker."""
        size = torch.tensor([len(payload) if self.rank == 0 else 0], dtype=torch.int64)
        self._wait(self.pg.broadcast([size], dist.BroadcastOptions()), what)
        data = torch.zeros(int(size.item()), dtype=torch.uint8)
        if self.rank == 0:
            data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
            self.bytes_sent += len(payload) * (self.world_size - 1)
        if data.numel():
            self._wait(self.pg.broadcast([data], dist.BroadcastOptions()), what)
        return bytes(data.numpy().tobytes())

    def shard(self, batch: Sequence[Any], step: int) -> list:
        """This worker's contiguous part of step ``step``'s global batch (sizes differ by at most one)."""
        self.step = step  # for the messages of the exchanges that follow
        n = len(batch)
        return list(batch[self.rank * n // self.world_size: (self.rank + 1) * n // self.world_size])

    def combine_losses(self, losses: list[tuple[float, float]], weight: float) -> list[tuple[float, float]]:
        """(L+, L-) per seed on this worker's shard, a mean over ``weight`` terms (its examples, or a
        completion's target tokens) -> those of the global batch: the weighted mean over the
        workers, what one process would compute on the whole batch. Every worker sums the gathered
        numbers in rank order, so all of them get bitwise the same result."""
        row = [float(weight)] + [weight * v for pair in losses for v in pair]
        rows = self.all_gather_floats(row, "step")
        total = sum(r[0] for r in rows)
        if total <= 0:
            raise ValueError("the step's global batch is empty")
        sums = [sum(r[1 + j] for r in rows) / total for j in range(2 * len(losses))]
        return [(sums[2 * i], sums[2 * i + 1]) for i in range(len(losses))]

    def check_identical(self, tensors: Sequence[torch.Tensor], what: str) -> str:
        """The sha256 of ``tensors`` (bytes, in order), checked equal on every worker."""
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digest = h.hexdigest()
        digests = [d.decode() for d in self.gather_bytes(digest.encode(), what)]
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise RuntimeError(f"data-parallel workers {differ} hold other {what} than worker 0 "
                               f"({[d[:12] for d in digests]})")
        return digest

    def close(self) -> None:
        self.pg = None
        self.store = None


# ---------------------------------------------------------------- a run on N workers
def _item_fields(item: Any) -> Any:
    """A batch item (any objective's dataclass) as JSON: its fields, without where it was read from
    (the same rows may sit in other folders on other machines)."""
    if dataclasses.is_dataclass(item):
        return {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name != "where"}
    return str(item)


def _fingerprint(plan) -> str:
    spec = {k: v for k, v in plan.config.to_dict().items() if k not in PER_WORKER_SETTINGS}
    return hashlib.sha256(json.dumps([spec, list(plan.train)], sort_keys=True, default=_item_fields).encode()).hexdigest()


def worker_plan(plan, rank: int):
    """Rank 0's plan as given; another rank's without evaluation data, output folder, progress bar
    or resume (rank 0's start-up broadcast puts it where rank 0 is)."""
    if rank == 0:
        return plan
    config = dataclasses.replace(plan.config, output_dir=None, resume=False, progress_bar=False)
    return dataclasses.replace(plan, config=config, eval=[], resume_from=None)


def start_worker_run(plan, group: DataParallelGroup, runner=None, callbacks=None):
    """This worker's :class:`~sglang.srt.mezo.training.run.MeZORun` of ``plan`` (a :func:`prepare`'d plan,
    the same on every worker), joined to ``group``: it checks that every worker has the same spec
    and training data, builds the run (rank 0 resumes from its checkpoint), and puts every worker
    where rank 0 is (step, RNGs, batch cursor, trajectory, LoRA adapter)."""
    prints = [p.decode() for p in group.gather_bytes(_fingerprint(plan).encode(), "start-up")]
    differ = [r for r, p in enumerate(prints) if p != prints[0]]
    if differ:
        raise ValueError(f"data-parallel workers {differ} were given another run spec or other training data than "
                         "worker 0: launch every worker with the same settings and data")
    plan = worker_plan(plan, group.rank)
    mezo_run = start_run(plan, runner, callbacks if group.rank == 0 else (callbacks or []), data_parallel=group)
    trainer = mezo_run.trainer
    if plan.prompt_choice is not None:  # each worker searched on its own: they must have chosen alike
        choice = plan.prompt_choice
        mine = json.dumps([choice.template, choice.label_words]).encode()
        choices = group.gather_bytes(mine, "prompt choice")
        if any(c != choices[0] for c in choices):
            raise ValueError("data-parallel workers chose different prompts (template='auto', label_words='auto' or "
                             "calibrate): give the template and label words that worker 0 chose (its prompt.json)")
    holds_weights = trainer.trainable.holds_weights()  # LoRA: the tensors go along; full weights: the trajectory
    payload = None
    if group.rank == 0:
        buffer = io.BytesIO()
        torch.save({"state": mezo_run.state_dict(), "trajectory": trainer.trajectory.to_dict(),
                    # clone: a view into SGLang's LoRA pool would carry the whole pool's storage along
                    "tensors": [t.detach().cpu().clone() for t in trainer.trainable.tensors] if holds_weights
                    else None},
                   buffer)
        payload = buffer.getvalue()
    start = torch.load(io.BytesIO(group.broadcast_bytes(payload)), weights_only=True)
    if group.rank != 0:
        trajectory = Trajectory.from_dict(start["trajectory"])
        with torch.no_grad():
            if start["tensors"] is not None:
                for t, saved in zip(trainer.trainable.tensors, start["tensors"]):
                    t.copy_(saved)
                # The update's state (Adam's moments, HiZOO's Hessian) of rank 0's steps so far.
                trainer.update.rebuild(trajectory.steps, trajectory.curvatures)
                trainer.trainable.after_update()
            elif trajectory.steps:  # full weights: replay rank 0's steps from the base model
                trainer.restore_weights("", trajectory)
        trainer.trajectory = trajectory
        mezo_run.load_state_dict(start["state"])
    group.check_identical(trainer.trainable.tensors, "starting weights")
    mezo_run.callbacks.append(lambda event: finish_check(mezo_run, group) if event["event"] == "end" else None)
    logger.info("data-parallel worker %d of %d ready at step %d", group.rank, group.world_size, mezo_run.step_count)
    return mezo_run, plan


def finish_check(mezo_run, group: DataParallelGroup) -> str:
    """At the end of a run: the trained weights' sha256, checked bitwise equal on every worker."""
    digest = group.check_identical(mezo_run.trainer.trainable.tensors, "trained weights")
    logger.info("data-parallel: trained weights bitwise identical on %d workers (sha256 %s); "
                "%d exchanges, %d bytes sent by this worker", group.world_size, digest, group.exchanges,
                group.bytes_sent)
    return digest
