"""The command lines: ``train`` (``python -m sglang.srt.mezo_mlm_trainer``) and ``replay``
(``python -m sglang.srt.mezo_trainer replay``)."""
