"""A run's data, torch-free: task presets (:mod:`.presets`), file and hub loaders (:mod:`.loaders`),
k-shot sampling and the train/dev/eval splits (:mod:`.sampling`), metrics (:mod:`.metrics`) and the
prompt that turns an example into token ids (:mod:`.prompt`).

MeZO only works with a prompt objective: each task needs a template with a ``[MASK]`` slot and one
label word per class (Malladi et al. 2023, on top of LM-BFF, Gao et al. 2021).
"""
