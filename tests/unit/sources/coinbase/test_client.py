"""The picows connection against an independent server (the `websockets` library): deflate,
fragments, close frames, a stale feed, and readable connect errors."""

from __future__ import annotations

import asyncio
import socket

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sluice.sources.coinbase.client import FeedUnavailable, Oversize, open_connection, parse_deflate

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


SHORT = [b'{"n":%d}' % n for n in range(5)]
LONG = b'{"pad":"%s"}' % (b"x" * 300)


async def _send_short_then_long(ws: ServerConnection) -> None:
    await ws.recv()  # the subscribe request
    for frame in SHORT:
        await ws.send(frame.decode())
    await ws.recv()  # the client has taken them all
    for frame in [LONG, *SHORT]:
        await ws.send(frame.decode())
    await ws.close(1001, "going away")


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_take_reports_the_size_of_what_it_hands_over_and_whether_a_frame_is_long(
    compression: str | None,
) -> None:
    """``taken_bytes`` is the exact total length of each take (whole or split at max_frames) and
    ``taken_short`` is True only for a take holding no frame over ``short_frame_bytes``."""
    async with serve(_send_short_then_long, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection(f"ws://127.0.0.1:{port}", short_frame_bytes=200)
        conn.send(b'{"type":"subscribe"}')
        takes: list[tuple[list[bytes], int, bool]] = []
        while sum(len(frames) for frames, _, _ in takes) < len(SHORT):
            frames = await conn.take(100, 5.0)
            takes.append((frames, conn.taken_bytes, conn.taken_short))
        assert conn.taken_bytes > 0
        with pytest.raises(TimeoutError):  # a take that hands over nothing reports nothing
            await conn.take(100, 0.05)
        assert (conn.taken_bytes, conn.taken_short) == (0, True)
        conn.send(b"next")
        while True:
            try:
                frames = await conn.take(2, 5.0)
            except FeedUnavailable:
                break
            takes.append((frames, conn.taken_bytes, conn.taken_short))
        conn.close()
    assert [f for frames, _, _ in takes for f in frames] == [*SHORT, LONG, *SHORT]
    for frames, nbytes, short in takes:
        assert nbytes == sum(map(len, frames))
        assert not short or max(map(len, frames)) <= 200
    assert takes[0][2]  # short frames alone are told apart
    assert not next(short for frames, _, short in takes if LONG in frames)


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


LIMIT = 4096


async def _send_oversize(ws: ServerConnection) -> None:
    await ws.recv()
    await ws.send('{"n":1}')
    await ws.send("x" * (LIMIT + 904))  # over the limit, under the transport limit
    await ws.send(iter(["y" * 3000, "y" * 3000]))  # a fragmented message over it
    await ws.send('{"n":2}')
    await ws.send(b"z" * (LIMIT + 1))  # binary frames too
    await ws.send("w" * LIMIT)  # exactly the limit: a frame like any other
    await ws.send('{"n":3}')
    await ws.send("v" * (LIMIT * 5))  # past 4 x the limit: the connection ends
    await ws.wait_closed()


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_an_oversize_message_is_replaced_by_its_size_and_the_connection_goes_on(
    compression: str | None,
) -> None:
    async with serve(_send_oversize, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await open_connection(f"ws://127.0.0.1:{port}", max_frame_bytes=LIMIT)
        conn.send(b'{"type":"subscribe"}')
        got: list[bytes] = []
        ended = ""
        while not ended:
            try:
                got += await conn.take(50, 5.0)
            except FeedUnavailable as exc:
                ended = str(exc)
        conn.close()
    # picows may still hand over the frame it refused before it disconnects: then as an Oversize
    assert [bytes(f) for f in got[:7]] == [
        b'{"n":1}',
        b"",
        b"",
        b'{"n":2}',
        b"",
        b"w" * LIMIT,
        b'{"n":3}',
    ]
    oversize = [f for f in got[:7] if isinstance(f, Oversize)]
    assert [(o.size, o.head) for o in oversize] == [
        (LIMIT + 904, b"x" * 4096),
        (6000, b"y" * 4096),
        (LIMIT + 1, b"z" * 4096),
    ]
    assert "over max_frame_bytes (4096)" in oversize[0].reason
    assert conn.listener.oversize == len(got) - 4
    # the end is explained, whichever side of the limit noticed it
    if compression:
        assert f"a compressed message inflates past {LIMIT * 4} bytes" in ended
    else:
        assert f"a frame over the client's limit of {LIMIT * 4} bytes" in ended
        assert "the client closed the connection with code 1009" in ended
