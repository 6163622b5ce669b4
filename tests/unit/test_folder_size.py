"""``/folder`` replies about the file's size, against a real aiohttp server on loopback: a
data file whose size (``Content-Range`` total) is not the disk's capacity is refused, and a
descriptor is read whole, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from mover.errors import TransportError
from mover.pipeline.folder import FolderTransport, read_small

SIZE = 1 << 20


class Cookie:
    value = "c"

    async def refresh(self, stale: str) -> str:
        return "c2"


def ranged(total: str) -> web.RequestHandler:
    async def handle(request: web.Request) -> web.Response:
        start, end = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        return web.Response(status=206, body=bytes(end - start + 1), headers={
            "Content-Range": f"bytes {start}-{end}/{total}"})
    return handle


async def descriptor(request: web.Request) -> web.Response:
    return web.Response(body=b'RW 2048 VMFS "d-flat.vmdk"\n' * int(request.query["n"]))


@pytest.fixture
async def server() -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    app = web.Application()
    app.router.add_get("/folder/right", ranged(str(SIZE)))
    app.router.add_get("/folder/longer", ranged(str(2 * SIZE)))
    app.router.add_get("/folder/unknown", ranged("*"))
    app.router.add_get("/folder/d.vmdk", descriptor)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield http, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize(("path", "ok"), [("right", True), ("unknown", True), ("longer", False)],
                         ids=["size-is-capacity", "size-not-given", "file-longer-than-disk"])
async def test_the_file_size_must_be_the_capacity(server: tuple[aiohttp.ClientSession, str],
                                                  path: str, ok: bool) -> None:
    http, base = server
    transport = FolderTransport(http, URL(f"{base}/folder/{path}"), SIZE, 1, Cookie(), "k")
    buf = memoryview(bytearray(4096))
    if ok:
        await transport.read_into(4096, buf)
        return
    with pytest.raises(TransportError, match=f"the file is {2 * SIZE} bytes, the disk {SIZE}"
                       ) as info:
        await transport.read_into(4096, buf)
    assert not info.value.transient


async def test_a_descriptor_is_read_whole_and_bounded(
        server: tuple[aiohttp.ClientSession, str]) -> None:
    http, base = server
    text = await read_small(http, URL(f"{base}/folder/d.vmdk?n=2"), Cookie(), "k")
    assert text == b'RW 2048 VMFS "d-flat.vmdk"\n' * 2
    with pytest.raises(TransportError, match="not a text descriptor"):
        await read_small(http, URL(f"{base}/folder/d.vmdk?n=5000"), Cookie(), "k")
