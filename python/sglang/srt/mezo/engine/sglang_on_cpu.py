"""Imported for its effect, ahead of SGLang, by each module here that imports SGLang's executor.

SGLang's modules read the engine choice (``SGLANG_USE_CPU_ENGINE``, cached by ``is_cpu()``) and
import ``sgl_kernel`` when they are first imported, so :func:`~sglang.srt.mezo.engine.cpu.ensure_cpu_runtime`
must have run by then, on every path in (the CLI, a library call, a test, a benchmark, a spawned
worker): the importing module is the one place they all pass. pyproject.toml gives this module an
isort section of its own, ahead of third-party imports, so that it stays above them.
"""

from sglang.srt.mezo.engine.cpu import ensure_cpu_runtime

ensure_cpu_runtime()
