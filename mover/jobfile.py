"""Job files: what a scheduler hands ``mover job``, as JSON.

A job file is one JSON object with ``"type"`` (``"backup"`` or ``"restore"``) and the same
settings as that command's options, named by their long option with ``_`` for ``-``
(``"password_file"``, ``"parallel_disks"``). The options of the command are the schema, so
the two can never disagree. Unknown keys and values of the wrong type are refused with the
key named; a password is never taken from a job file (use ``password_file`` or
``MOVER_PASSWORD``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mover.errors import UsageError

_FORBIDDEN = {"password": "put it in a file named by \"password_file\", or set MOVER_PASSWORD",
              "json": "a job always reports JSON lines"}


def load(text: str, source: str, commands: dict[str, argparse.ArgumentParser]) -> tuple[
        str, argparse.Namespace]:
    """The command and its settings from job file text; UsageError naming the fault."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"job file {source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"job file {source} must hold one JSON object")
    kind = data.pop("type", None)
    if kind not in commands:
        raise UsageError(f"job file {source}: \"type\" must be one of "
                         f"{', '.join(map(repr, sorted(commands)))}, not {kind!r}")
    return kind, _namespace(data, commands[kind], f"job file {source} ({kind})")


def _namespace(data: dict[str, Any], parser: argparse.ArgumentParser,
               where: str) -> argparse.Namespace:
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    settings = argparse.Namespace(**{dest: a.default for dest, a in actions.items()})
    for key, value in data.items():
        if key in _FORBIDDEN:
            raise UsageError(f"{where}: key {key!r} is not allowed: {_FORBIDDEN[key]}")
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(k for k in actions if k not in _FORBIDDEN))
            raise UsageError(f"{where}: unknown key {key!r}; known keys: {known}")
        setattr(settings, key, _typed(key, value, action, where))
    missing = sorted(dest for dest, a in actions.items()
                     if a.required and getattr(settings, dest) is None)
    if missing:
        raise UsageError(f"{where}: missing required keys: {', '.join(missing)}")
    settings.json = True
    return settings


def _typed(key: str, value: Any, action: argparse.Action, where: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        want: type = bool
    elif isinstance(action, argparse._CountAction):
        want = int
    else:
        want = action.type if isinstance(action.type, type) else str
    if value is None and action.default is None:
        return None
    if callable(action.type) and not isinstance(action.type, type) and isinstance(value, str):
        try:   # a parsing function (``--repo``'s): the same check as on the command line
            return action.type(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise UsageError(f"{where}: {key!r}: {exc}") from None
    if isinstance(action, argparse._AppendAction):   # a repeatable option: a list of strings
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: {key!r} must be a list of strings, not "
                             f"{json.dumps(value)}")
        return list(value)
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{where}: {key!r} must be one of "
                         f"{', '.join(map(json.dumps, action.choices))}, not {json.dumps(value)}")
    if want is Path and isinstance(value, str):
        return Path(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        name = {bool: "true or false", int: "a whole number", float: "a number",
                str: "a string", Path: "a path string"}.get(want, want.__name__)
        raise UsageError(f"{where}: {key!r} must be {name}, not {json.dumps(value)}")
    return value
