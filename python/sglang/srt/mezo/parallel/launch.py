"""Launching data-parallel workers: what torchrun puts in a worker's environment, the device each
worker takes, and SGLang's own process group kept apart from the workers' group."""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

#: What torchrun (and a by-hand launch) puts in a worker's environment; SGLang must not see them.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
              "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
              "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
              "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_ERROR_FILE", "TORCH_NCCL_ASYNC_ERROR_HANDLING")


@dataclass(frozen=True)
class WorkerEnv:
    """Where this worker sits in the group, as torchrun (or a by-hand launch) says."""

    rank: int
    world_size: int
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    agent_store: bool = False  # torchrun's agent hosts the store at MASTER_ADDR:MASTER_PORT

    @classmethod
    def from_environ(cls, environ=None) -> Optional["WorkerEnv"]:
        """This process's place, or None when it was not launched as one of several workers."""
        environ = os.environ if environ is None else environ
        if int(environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in environ]
        if missing:
            raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} is not: launch the workers with torchrun "
                             "(or --nproc N), or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each")
        return cls(rank=int(environ["RANK"]), world_size=int(environ["WORLD_SIZE"]),
                   local_rank=int(environ.get("LOCAL_RANK", "0")),
                   local_world_size=int(environ.get("LOCAL_WORLD_SIZE", "1")),
                   master_addr=environ["MASTER_ADDR"], master_port=int(environ["MASTER_PORT"]),
                   agent_store=environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True")


def worker_device(env: WorkerEnv, device: Optional[str]) -> Optional[str]:
    """The device a worker runs on: on a machine with GPUs, the one of its local rank (unless the
    user named one); else what was asked. (Not exercised here: this machine has no GPU.)

    >>> worker_device(WorkerEnv(rank=3, world_size=4, local_rank=1), "cpu")
    'cpu'
    """
    if device in (None, "auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{env.local_rank}"
    return device


def isolate_sglang(env: WorkerEnv) -> str:
    """Prepare this worker's environment for SGLang's own single-process torch.distributed world:
    drop the launch variables (so nothing in SGLang or torch mistakes the data-parallel world for
    its own) and point SGLang's rendezvous at a private file store instead of a TCP port picked at
    random (two runners of one machine could pick the same one). Returns the init method."""
    for key in LAUNCH_ENV:
        os.environ.pop(key, None)
    path = os.path.join(tempfile.gettempdir(), f"sglang-mezo-dp-{os.getpid()}-{env.rank}.store")
    if os.path.exists(path):
        os.remove(path)
    os.environ["SGLANG_DISTRIBUTED_INIT_METHOD_OVERRIDE"] = f"file://{path}"
    atexit.register(lambda: os.path.exists(path) and os.remove(path))
    return os.environ["SGLANG_DISTRIBUTED_INIT_METHOD_OVERRIDE"]


def torchrun_command(nproc: int, argv: Sequence[str], module: str = "sglang.srt.mezo_mlm_trainer") -> list[str]:
    """The command that runs ``python -m module argv`` as ``nproc`` workers on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", module, *argv]
