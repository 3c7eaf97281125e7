"""sglang-mezo: MeZO (zeroth-order, forward-only) fine-tuning inside SGLang, as one package in layers.

Each folder imports only from the folders listed below it (``tests/unit/test_layers.py`` checks it
with import-linter), and ``run_spec/`` and ``data/`` import neither torch nor SGLang::

    plugin.py      SGLang's entry point: the CPU fixes, the model class, the server's hooks
    cli/           the command lines: ``train`` (python -m sglang.srt.mezo_mlm_trainer) and ``replay``
    server/        --enable-mezo: launch flags, HTTP API, job store and requests, the scheduler's worker
    parallel/      data-parallel workers (torchrun), each with its own ModelRunner
    training/      the trainer, the objectives, the step-wise run, checkpoints, the plan, replay
    engine/        SGLang: the CPU runtime, the ModelRunner and its forwards, the LoRA pool, models
    zo/            torch only: the noise z, the sign kernel, the update rules, ZO-Adam, the trajectory
    run_spec/      the run spec (MeZOConfig), its defaults and its CLI flags
    data/          task presets, loaders, k-shot sampling, metrics, the prompt
    extensions.py  users' modules of their own (a grader type), imported by every entry point
    errors.py, io.py   the errors every layer raises, atomic file writes

The seed's modules ``sglang.srt.mezo_trainer``, ``sglang.srt.mezo_mlm_trainer`` and
``sglang.srt.mezo_tasks`` re-export the public names.
"""
