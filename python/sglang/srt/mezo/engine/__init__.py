"""SGLang, put to work for MeZO: the CPU runtime, the ModelRunner and its forwards, the LoRA pool,
model aliases and kinds, the RoBERTa masked-LM model. The only layer below ``training/`` that
imports SGLang.

Importing this package prepares SGLang for the CPU when there is no GPU (:func:`ensure_cpu_runtime`),
once, before any of its modules imports SGLang's model executor.
"""

from sglang.srt.mezo.engine.cpu import ensure_cpu_runtime

ensure_cpu_runtime()
