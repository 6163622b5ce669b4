"""The parser class of every mover command: each option falls back to a ``MOVER_*``
environment variable, named after its long option (``--password-file`` ->
``MOVER_PASSWORD_FILE``, ``--repo`` -> ``MOVER_REPO``, ``--json`` -> ``MOVER_JSON``). The
command line wins over the environment, the environment over the built-in default; a required
option given in the environment is no longer required. Flags take ``1``/``true``/``yes`` or
``0``/``false``/``no``. ``--help`` names the variable of each option.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from mover.errors import UsageError

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def variable(names: tuple[str, ...]) -> str | None:
    """``MOVER_<LONG_OPTION>`` of an option (None for positionals and short-only options)."""
    long = next((n for n in names if n.startswith("--")), None)
    return None if long is None else "MOVER_" + long[2:].replace("-", "_").upper()


def with_environment(names: tuple[str, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``add_argument``'s keyword arguments with the default taken from the environment."""
    name = variable(names)
    if name is None or kwargs.get("action") in ("version", "help"):
        return kwargs
    kwargs = dict(kwargs)
    if kwargs.get("help") != argparse.SUPPRESS:
        kwargs["help"] = f"{kwargs.get('help') or ''} [env {name}]".lstrip()
    value = os.environ.get(name)
    if value is None:
        return kwargs
    action = kwargs.get("action")
    if action in ("store_true", "store_false"):
        word = value.strip().lower()
        if word not in _TRUE | _FALSE:
            raise UsageError(f"{name}={value!r}: must be 1, true, yes, 0, false or no")
        kwargs["default"] = (word in _TRUE) == (action == "store_true")
    elif action == "count":
        if not value.isdigit():
            raise UsageError(f"{name}={value!r}: must be a whole number")
        kwargs["default"] = int(value)
    else:
        kwargs["default"] = value  # a string default goes through the option's type
        kwargs["required"] = False
    return kwargs


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose options fall back to ``MOVER_*`` variables."""

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        return super().add_argument(*names, **with_environment(names, kwargs))

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        group = super().add_mutually_exclusive_group(**kwargs)
        add = group.add_argument

        def add_with_environment(*names: Any, **options: Any) -> argparse.Action:
            return add(*names, **with_environment(names, options))

        group.add_argument = add_with_environment  # type: ignore[method-assign]
        return group
