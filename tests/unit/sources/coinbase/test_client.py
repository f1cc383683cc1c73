"""The picows connection against an independent server (the `websockets` library): deflate,
fragments, close frames, a stale feed, and readable connect errors."""

from __future__ import annotations

import asyncio
import socket

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sluice.sources.coinbase.client import FeedUnavailable, open_connection, parse_deflate

FRAMES = [
    b'{"type":"heartbeat","n":%d,"pad":"%s"}' % (n, b"x" * (n * 37 % 300)) for n in range(200)
]


async def _send_all(ws: ServerConnection) -> None:
    await ws.recv()  # the subscribe request
    for frame in FRAMES:
        await ws.send(frame.decode())
    await ws.send(iter(['{"frag', 'mented":1}']))
    await ws.close(1001, "going away")


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_frames_arrive_whole_and_in_order_with_or_without_deflate(
    compression: str | None,
) -> None:
    async with serve(_send_all, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection(f"ws://127.0.0.1:{port}")
        assert conn.compressed is (compression == "deflate")
        conn.send(b'{"type":"subscribe"}')
        got: list[bytes] = []
        ended = ""
        while not ended:
            try:
                got += await conn.take(50, 5.0)
            except FeedUnavailable as exc:
                ended = str(exc)
        assert "closed by the server (code 1001: going away)" in ended
        conn.close()
    assert got == [*FRAMES, b'{"fragmented":1}']


async def test_take_times_out_when_nothing_arrives() -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection(f"ws://127.0.0.1:{port}")
        with pytest.raises(TimeoutError):
            await conn.take(10, 0.2)
        conn.close()


async def test_a_refused_connection_says_it_cannot_reach_the_host() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FeedUnavailable, match=f"cannot reach 127.0.0.1:{port}"):
        await open_connection(f"ws://127.0.0.1:{port}", connect_timeout_secs=2)


async def test_a_server_that_never_answers_the_handshake_times_out() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(FeedUnavailable, match=r"no answer within 0\.3 s"):
            await open_connection(f"ws://127.0.0.1:{port}", connect_timeout_secs=0.3)
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def test_deflate_parameters_are_read_from_the_extension_header() -> None:
    assert parse_deflate(None) is None
    assert parse_deflate("x-other") is None
    accepted = parse_deflate(
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    )
    assert accepted is not None
    assert accepted.server_no_context_takeover
    assert accepted.server_max_window_bits == 10


async def test_server_no_context_takeover_is_read_with_one_inflater() -> None:
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    async with serve(
        _send_all,
        "127.0.0.1",
        0,
        compression=None,
        extensions=[ServerPerMessageDeflateFactory(server_no_context_takeover=True)],
    ) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection(f"ws://127.0.0.1:{port}")
        assert conn.listener.deflate is not None
        assert conn.listener.deflate.server_no_context_takeover
        conn.send(b'{"type":"subscribe"}')
        got: list[bytes] = []
        while len(got) < len(FRAMES) + 1:
            got += await conn.take(50, 5.0)
        conn.close()
    assert got == [*FRAMES, b'{"fragmented":1}']
