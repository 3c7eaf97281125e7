"""The perturbed adapters of the steps waiting for their client's rewards, loaded into SGLang for
the client to sample (the HTTP process's side of an external grader).

A step's adapters are loaded through the tokenizer manager (so SGLang serves them by name) when the
job's client first reads the step's rollouts, and unloaded when the step ends: its rewards are
posted, the job ends, or a newer publication replaces it (a restart). They are never listed in
``GET /v1/models`` (:meth:`RolloutAdapters.names` is what the listing leaves out) and only a
request carrying the job's own key reaches them (:mod:`..rollout_access`). A name that was one of
them and is gone is remembered, so a late request learns why.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, NamedTuple, Optional

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.rollout_book import RolloutBook
from sglang.srt.mezo.server.store import FINAL, JobStore

logger = logging.getLogger(__name__)


class RolloutAdapter(NamedTuple):
    """A loaded perturbed adapter: its job, its step, and the hash of the job's key (:mod:`.job_keys`)."""

    job_id: str
    step: int
    key_sha256: str


class RolloutAdapters:
    """The loaded rollout adapters of every job of ``store``, through ``tokenizer_manager``."""

    #: How many former adapters' names are remembered (two a step: a long job's would grow without end).
    REMEMBER_GONE = 1024

    def __init__(self, store: JobStore, tokenizer_manager: Any):
        self.store, self.tm = store, tokenizer_manager
        self.loaded: dict[str, RolloutAdapter] = {}
        self.gone: OrderedDict[str, str] = OrderedDict()  # name -> why it is no longer served, oldest first
        self.lock = asyncio.Lock()

    def names(self) -> set[str]:
        """The rollout adapters loaded in SGLang: what ``GET /v1/models`` never lists."""
        return set(self.loaded)

    def any(self) -> bool:
        """Whether any rollout adapter is loaded or remembered as gone (else no request can name one)."""
        return bool(self.loaded or self.gone)

    def owner(self, name: str) -> Optional[RolloutAdapter]:
        return self.loaded.get(name)

    async def load(self, job_id: str, key_sha256: str, rollouts: dict) -> None:
        """Load the adapters of ``rollouts`` (a job's pending step) that are not loaded yet, for the
        holder of the key whose hash is ``key_sha256``."""
        from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput  # noqa: PLC0415  (as in adapter_cache)

        async with self.lock:
            for name, path in rollouts["adapters"].items():
                if name in self.loaded:
                    continue
                result = await self.tm.load_lora_adapter(LoadLoRAAdapterReqInput(lora_name=name, lora_path=path))
                if not result.success and "already loaded" not in (result.error_message or ""):
                    raise RequestError(f"the perturbed adapter {name!r} of step {rollouts['step']} could not be "
                                       f"loaded: {result.error_message}", "fine_tuning_job_id", 500,
                                       "adapter_load_failed")
                self.loaded[name] = RolloutAdapter(job_id, rollouts["step"], key_sha256)

    async def end_step(self, job_id: str, step: int, why: str) -> None:
        """Unload job ``job_id``'s adapters of step ``step`` (``why``: what a late request is told)."""
        async with self.lock:
            for name in [n for n, a in self.loaded.items() if (a.job_id, a.step) == (job_id, step)]:
                await self._unload(name, why)

    async def _unload(self, name: str, why: str) -> None:
        from sglang.srt.managers.io_struct import UnloadLoRAAdapterReqInput  # noqa: PLC0415  (as in adapter_cache)

        del self.loaded[name]
        self.gone[name] = why
        while len(self.gone) > self.REMEMBER_GONE:
            self.gone.popitem(last=False)
        result = await self.tm.unload_lora_adapter(UnloadLoRAAdapterReqInput(lora_name=name))
        if not result.success:
            logger.warning("MeZO: unloading rollout adapter %s failed: %s", name, result.error_message)

    async def trim(self) -> None:
        """Unload the adapters of steps that ended without a post here: the job ended, or its
        scheduler published the step again (after a restart) under new names."""
        async with self.lock:
            for name, adapter in list(self.loaded.items()):
                status = (await asyncio.to_thread(self.store.state, adapter.job_id)).get("status")
                current = await asyncio.to_thread(RolloutBook(self.store, adapter.job_id).current)
                if status in FINAL:
                    await self._unload(name, f"its job ended ({status})")
                elif current is None or name not in current.get("adapters", {}):
                    await self._unload(name, f"step {adapter.step} was published again under other names")
