"""What a MeZO-enabled server was started with, carried from the launcher to every process."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from sglang.srt.mezo.extensions import load_extensions


@dataclass
class ServerSettings:
    """What a MeZO-enabled server was started with (carried from the launcher to every process)."""

    output_dir: str
    data_dir: Optional[str] = None
    max_concurrent_jobs: int = 1
    model_path: str = ""  # the folder the server loaded (an alias resolved)
    served_model_name: str = ""
    max_lora_rank: int = 8
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    train_share: float = 0.5  # of the scheduler's time, at most, while requests are waiting
    max_loaded_adapters: int = 8  # finished adapters and checkpoints loaded for serving at once
    keep_checkpoints: int = 2  # a job keeps its last N checkpoints and its best one; 0 keeps all
    max_upload_bytes: int = 32 * 1024 * 1024
    extensions: tuple[str, ...] = ()  # the users' modules (--mezo-extensions) every process imports

    def load_extensions(self) -> list[str]:
        """Import :attr:`extensions` and the entry points of ``sglang_mezo.extensions`` into this
        process (each once): the HTTP process, which checks jobs' graders, and the scheduler's,
        which trains them. Returns what is loaded; raises ``ExtensionError``."""
        return load_extensions(self.extensions)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora_target_modules"] = list(self.lora_target_modules)
        d["extensions"] = list(self.extensions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ServerSettings":
        d = dict(d)
        d["lora_target_modules"] = tuple(d.get("lora_target_modules") or ())
        d["extensions"] = tuple(d.get("extensions") or ())
        return cls(**d)
