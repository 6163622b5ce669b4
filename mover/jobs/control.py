"""Runs the synchronous control plane (pyvmomi) on one dedicated thread.

One thread serialises every SOAP call of a job: pyvmomi objects are not meant to be shared
between threads, and vSphere calls are few and slow next to the data plane."""

from __future__ import annotations

import asyncio
import functools
import http.client
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from mover.errors import ConnectError, MoverError
from mover.vsphere.faults import translate

T = TypeVar("T")


class ControlPlane:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mover-soap")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the control thread; vSphere faults that no adapter
        mapped come out as ``VSphereError``."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor,
                                              functools.partial(fn, *args, **kwargs))
        except MoverError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            # pyvmomi lets socket and HTTP errors through as they are
            raise ConnectError(f"lost the connection to vSphere: {type(exc).__name__}: {exc}; "
                               "check the server and the network") from exc
        except Exception as exc:
            mapped = translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
