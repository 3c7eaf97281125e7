"""Users' extension modules: code of their own (a grader type, an objective) that every entry point
imports before it builds a run spec, so that the spec can name what the code registers.

An extension is a module whose import registers something, e.g. ``register_grader("word_count",
WordCountGrader.from_object)`` (:mod:`sglang.srt.mezo.data.graders`). A run names it with
``--extension MODULE`` (``python -m sglang.srt.mezo_mlm_trainer``, repeatable), a server with
``--mezo-extensions MOD[,MOD]`` (imported in its HTTP process, which checks jobs' graders, and in
its scheduler process, which trains them), and Python code simply imports it. An installed package
can instead declare an entry point of the group :data:`ENTRY_POINT_GROUP`, as SGLang's plugins do::

    # pyproject.toml of the package that holds my_graders.py
    [project.entry-points."sglang_mezo.extensions"]
    my_graders = "my_graders"                   # imported
    my_objectives = "my_objectives:register"    # imported, then register() called

Every entry point reads the entry points of the group always, whatever it was told. Each extension
is imported (and its function called) once per process.

>>> load_extensions(["json"])[0]  # any importable module; the entry points installed come after it
'json'
>>> load_extensions(["no_such_extension"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sglang.srt.mezo.errors.ExtensionError: extension module 'no_such_extension' was not found: ...
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Sequence

from sglang.srt.mezo.errors import ExtensionError

#: The entry point group whose entry points every run and server loads.
ENTRY_POINT_GROUP = "sglang_mezo.extensions"

# What this process has loaded: module names, and entry points as "module[:function]".
_loaded: set[str] = set()


def _import(module: str, what: str) -> object:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise ExtensionError(
                f"{what} {module!r} was not found: put the folder that holds {module.split('.')[0]}.py (or its "
                "package) on PYTHONPATH, or pip install the package that provides it", name=module) from e
        raise ExtensionError(f"{what} {module!r} imports {e.name!r}, which is not installed: pip install it "
                             f"(or put it on PYTHONPATH) where the run or server starts", name=module) from e
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises, say which module raised it
        raise ExtensionError(f"{what} {module!r} failed while it was imported: {type(e).__name__}: {e}",
                             name=module) from e


def _load_entry_point(entry_point: importlib.metadata.EntryPoint) -> None:
    what = f"extension entry point {entry_point.name!r} (group {ENTRY_POINT_GROUP}, {entry_point.value!r})"
    module = _import(entry_point.module, what)
    if not entry_point.attr:
        return
    target: object = module
    for part in entry_point.attr.split("."):
        if not hasattr(target, part):
            raise ExtensionError(f"{what}: {entry_point.module} has no {entry_point.attr!r}; name a function of the "
                                 "module after the colon, or the module alone", name=entry_point.module)
        target = getattr(target, part)
    if not callable(target):
        raise ExtensionError(f"{what}: {entry_point.attr} is {type(target).__name__}, not a function; name a "
                             "function to call with no arguments, or the module alone", name=entry_point.module)
    try:
        target()
    except Exception as e:  # noqa: BLE001 - the same: say which entry point failed
        raise ExtensionError(f"{what}: {entry_point.value}() failed: {type(e).__name__}: {e}",
                             name=entry_point.module) from e


def load_extensions(modules: Sequence[str] = ()) -> list[str]:
    """Import each of ``modules`` (dotted module names), then load every entry point of the group
    :data:`ENTRY_POINT_GROUP`, each once per process (a module also named by an entry point too).
    Returns the extensions in effect, in that order: ``modules``, then the entry points as their
    ``module[:function]``. Raises
    :class:`~sglang.srt.mezo.errors.ExtensionError` naming the module that could not be imported.
    """
    if isinstance(modules, str):  # one name is not a sequence of its letters
        modules = [modules]
    names = []
    for module in modules:
        if not isinstance(module, str) or not module.strip():
            raise ExtensionError(f"an extension is a module's dotted name such as 'my_graders', got {module!r}")
        names.append(module.strip())
        if names[-1] not in _loaded:
            _import(names[-1], "extension module")
            _loaded.add(names[-1])
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        names.append(entry_point.value)
        if entry_point.value not in _loaded:
            _load_entry_point(entry_point)
            _loaded.add(entry_point.value)
    return list(dict.fromkeys(names))


def parse_extensions(text: str) -> list[str]:
    """The module names of a comma-separated list (``--mezo-extensions``), blanks dropped.

    >>> parse_extensions("my_graders, my_company.objectives,")
    ['my_graders', 'my_company.objectives']
    """
    return [name.strip() for name in text.split(",") if name.strip()]
