"""The run spec, torch-free: :class:`~.config.MeZOConfig` (every setting, checked), its per-kind
defaults (:mod:`.defaults`) and the CLI flags made from its fields (:mod:`.flags`)."""
