"""Jobs' adapters loaded into SGLang for serving, at most ``--mezo-max-loaded-adapters`` at once.

A request that names a job's model takes it (:meth:`AdapterCache.acquire`): loaded already, or
loaded now through the tokenizer manager's ``load_lora_adapter``, after the least recently used
ones that no request holds are unloaded with its ``unload_lora_adapter``. When every loaded
adapter is held by a request in flight, the request waits for one to be given back
(:meth:`AdapterCache.release`), so the bound holds also under load.

What is loaded is read from SGLang's own LoRA registry each time, so an adapter that SGLang
unloads or reloads by itself (its ``--max-loaded-loras``) is counted as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Iterable

from sglang.srt.mezo.errors import RequestError
from sglang.srt.mezo.server.catalog import JobModel

logger = logging.getLogger(__name__)


class AdapterCache:
    """A bounded, least-recently-used set of job adapters loaded in the server."""

    WAIT_S = 60.0  # how long a request waits for a loaded adapter to be given back

    def __init__(self, tokenizer_manager: Any, bound: int):
        self.tm = tokenizer_manager
        self.bound = bound
        self.ours: set[str] = set()  # names this cache ever loaded
        self.last_used: dict[str, float] = {}
        self.in_use: Counter[str] = Counter()
        self.cond = asyncio.Condition()

    def loaded(self) -> set[str]:
        """The job adapters SGLang has loaded now."""
        return self.ours & set(self.tm.lora_registry.get_all_adapters())

    # -- taking and giving back

    async def acquire(self, models: Iterable[JobModel]) -> list[str]:
        """Make ``models`` loaded and hold them for one request; returns the names to :meth:`release`."""
        wanted = {m.name: m for m in models}
        if len(wanted) > self.bound:
            raise RequestError(f"the request names {len(wanted)} fine-tuned models, but this server loads at most "
                               f"{self.bound} at once (the launch flag --mezo-max-loaded-adapters)", "lora_path")
        deadline = time.monotonic() + self.WAIT_S
        async with self.cond:
            while not self._fits(wanted):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestError(f"all {self.bound} loaded fine-tuned models are in use by requests in flight; "
                                       "retry, or start the server with a larger --mezo-max-loaded-adapters",
                                       "model", 503, "server_busy")
                try:
                    await asyncio.wait_for(self.cond.wait(), remaining)
                except asyncio.TimeoutError:
                    continue
            await self._evict(len(self.loaded() | set(wanted)) - self.bound, keep=set(wanted))
            for model in wanted.values():
                await self._load(model)
            for name in wanted:
                self.in_use[name] += 1
                self.last_used[name] = time.monotonic()
        return list(wanted)

    async def release(self, names: Iterable[str]) -> None:
        async with self.cond:
            for name in names:
                self.in_use[name] -= 1
                if self.in_use[name] <= 0:
                    del self.in_use[name]
            self.cond.notify_all()

    def _fits(self, wanted: dict[str, JobModel]) -> bool:
        loaded = self.loaded()
        needed = len(loaded | set(wanted))
        evictable = [n for n in loaded if n not in wanted and not self.in_use[n]]
        return needed - len(evictable) <= self.bound

    # -- loading and unloading (with the condition's lock held)

    async def _load(self, model: JobModel) -> None:
        # SGLang's request structs import its model layers: the HTTP process has them by now; at the
        # top they would be pulled into every process that loads the plugin (and into unit tests).
        from sglang.srt.managers.io_struct import LoadLoRAAdapterReqInput  # noqa: PLC0415

        if model.name in self.tm.lora_registry.get_all_adapters():
            self.ours.add(model.name)
            return
        result = await self.tm.load_lora_adapter(LoadLoRAAdapterReqInput(lora_name=model.name, lora_path=model.path))
        if not result.success and "already loaded" not in (result.error_message or ""):
            logger.warning("MeZO: loading %s from %s failed: %s", model.name, model.path, result.error_message)
            raise RequestError(f"the fine-tuned model {model.name!r} could not be loaded: {result.error_message}",
                               "model", 500, "adapter_load_failed")
        self.ours.add(model.name)
        logger.info("MeZO: loaded %s (%d of at most %d loaded)", model.name, len(self.loaded()), self.bound)

    async def _unload(self, name: str) -> None:
        from sglang.srt.managers.io_struct import UnloadLoRAAdapterReqInput  # noqa: PLC0415  (as in _load)

        if name in self.tm.lora_registry.get_all_adapters():
            result = await self.tm.unload_lora_adapter(UnloadLoRAAdapterReqInput(lora_name=name))
            if not result.success:
                logger.warning("MeZO: unloading %s failed: %s", name, result.error_message)
                return
        self.last_used.pop(name, None)

    async def _evict(self, count: int, keep: set[str]) -> None:
        """Unload the ``count`` least recently used adapters that no request holds."""
        if count <= 0:
            return
        idle = sorted((n for n in self.loaded() if n not in keep and not self.in_use[n]),
                      key=lambda n: self.last_used.get(n, 0.0))
        for name in idle[:count]:
            logger.info("MeZO: unloading %s, the least recently used of %d loaded", name, len(self.loaded()))
            await self._unload(name)

    # -- upkeep

    async def unload(self, name: str) -> None:
        """Unload ``name`` now (its model is being deleted, so no new request takes it). SGLang waits
        for the requests still using it; the lock is not held meanwhile, so that a long stream on the
        deleted model does not hold up requests for the others."""
        await self._unload(name)
        async with self.cond:
            self.ours.discard(name)
            self.cond.notify_all()

    async def trim(self, servable: set[str]) -> None:
        """Unload what is no longer servable (pruned, deleted) and what is over the bound."""
        async with self.cond:
            for name in self.loaded() - servable:
                if not self.in_use[name]:
                    await self._unload(name)
                    self.ours.discard(name)
            await self._evict(len(self.loaded()) - self.bound, keep=set())
            self.cond.notify_all()
