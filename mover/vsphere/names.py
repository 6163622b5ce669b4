"""Inventory names as the vSphere API returns them (pure).

vSphere stores three characters of a name escaped: a VM a user calls ``web/01 100%`` is
``web%2f01 100%25`` to every API client (``%2f`` for ``/``, ``%5c`` for ``\\``, ``%25`` for
``%``; vSphere Web Services API reference, ``ManagedEntity.name``). Everything else (spaces,
``+``, ``]``, non-ASCII) is stored as typed. mover matches and shows the name as typed, and
sends the API's spelling back to the API (``dcPath``, ``dsName``, datastore paths).
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"%(2[fF]|5[cC]|25)")
_CHARS = {"2f": "/", "5c": "\\", "25": "%"}


def unescape(name: str) -> str:
    """The name as the user typed it: ``web%2f01 100%25`` -> ``web/01 100%``."""
    return _ESCAPE.sub(lambda m: _CHARS[m.group(1).lower()], name)


def escape(name: str) -> str:
    """The API's spelling of a typed name (``%`` first, so it is not escaped twice)."""
    return name.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def matches(api_name: str, spec: str) -> bool:
    """Whether ``spec`` (what a user gave) names the entity the API calls ``api_name``:
    either spelling."""
    return spec in (api_name, unescape(api_name))
