"""SGLang, put to work for MeZO: the CPU runtime, the ModelRunner and its forwards, the LoRA pool,
model aliases and kinds, the RoBERTa masked-LM model. The only layer below ``training/`` that
imports SGLang.

Importing this package changes nothing. The modules here that import SGLang's executor import
:mod:`~sglang.srt.mezo.engine.sglang_on_cpu` first, which prepares SGLang for the CPU when there is
no GPU (:func:`~sglang.srt.mezo.engine.cpu.ensure_cpu_runtime`) before SGLang reads the engine choice.
"""
