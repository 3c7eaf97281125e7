"""The CLI's flags, made from :class:`~sglang.srt.mezo.run_spec.config.MeZOConfig`'s fields: one flag a
field, grouped and with its help.

>>> import argparse
>>> parser = argparse.ArgumentParser(); add_config_arguments(parser)
>>> config_from_arguments(parser.parse_args(["--task", "rte", "--num-steps", "5"])).num_steps
5
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal, Optional, Union

from sglang.srt.mezo.data.prompt import parse_label_words
from sglang.srt.mezo.run_spec.config import MeZOConfig, allowed_types, field_hints
from sglang.srt.mezo.run_spec.defaults import AUTO, DEFAULTS


# ---------------------------------------------------------------- the CLI, made from the fields
def _cli_flag(f: dataclasses.Field) -> Optional[str]:
    cli = f.metadata.get("cli")
    if cli is False:
        return None
    return "--" + (cli or f.name.replace("_", "-"))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`MeZOConfig` field, grouped as the fields are, with their help."""
    hints, groups = field_hints(), {}
    for f in dataclasses.fields(MeZOConfig):
        flag = _cli_flag(f)
        if flag is None:
            continue
        group = groups.get(f.metadata["group"])
        if group is None:
            group = groups[f.metadata["group"]] = parser.add_argument_group(f.metadata["group"])
        types, _ = allowed_types(hints[f.name])
        kind = types[0]
        help_text = f.metadata["help"]
        if f.default is not None and f.default is not dataclasses.MISSING and kind is not bool:
            help_text += " (default: %(default)s)"
        if kind is bool and f.default is None:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind is bool:
            on, off = flag, "--no-" + flag[2:]
            group.add_argument(off if f.default else on, dest=f.name, action="store_false" if f.default else "store_true",
                               help=("do not: " if f.default else "") + help_text)
        elif typing.get_origin(kind) is Literal:
            group.add_argument(flag, dest=f.name, choices=typing.get_args(kind), default=f.default, help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=f.name, type=lambda s: tuple(p.strip() for p in s.split(",") if p.strip()),
                               default=f.default, help=help_text.replace("%(default)s", ",".join(f.default)))
        elif f.name == "grader":  # a JSON file of the grader object (or the object's JSON text)
            group.add_argument(flag, dest=f.name, metavar="FILE", default=None, help=help_text)
        elif typing.get_origin(kind) is dict:
            group.add_argument(flag, dest=f.name, type=_label_words_argument, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=f.default, help=help_text)


def _label_words_argument(text: str) -> Union[dict[str, str], str]:
    return AUTO if text.strip().lower() == AUTO else parse_label_words(text)


def config_from_arguments(args: argparse.Namespace, **overrides: Any) -> MeZOConfig:
    """The :class:`MeZOConfig` that :func:`add_config_arguments`' flags describe."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(MeZOConfig) if _cli_flag(f) is not None}
    values.update(overrides)
    return MeZOConfig(**values)


def defaults_table() -> str:
    """The per-kind defaults, one line per (kind, trainable set), for help texts."""
    return "\n".join(
        f"  {kind} LM, {trainable:<4}  lr {v['learning_rate']:<6g} eps {v['epsilon']:<6g} batch {v['batch_size']:<3} "
        f"steps {v['num_steps']:<6} eval every {v['eval_steps']:<5} wd {v['weight_decay']:g}"
        for (kind, trainable), v in DEFAULTS.items())
