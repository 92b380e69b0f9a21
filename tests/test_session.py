"""Outbox bounds, the token bucket, and the close request a session carries."""

from __future__ import annotations

import trio
import trio.testing

from gateway.protocol import CloseCode, ErrorCode
from gateway.session import Flusher, Outbox, RateLimiter, Session
from tests.helpers import idle_timers


def make_session(frames: int = 3, size: int = 1000) -> Session:
    return Session(
        "events", "local", Outbox(frames, size), RateLimiter(10, 5, 0.0), idle_timers(), close_timeout=5
    )


def test_outbox_bounded_by_frames_and_bytes() -> None:
    outbox = Outbox(2, 10)
    assert outbox.put(b"12345")
    assert not outbox.put(b"123456")  # would pass the byte bound
    assert outbox.put(b"1")
    assert not outbox.put(b"1")  # would pass the frame bound
    assert outbox.take() == [b"12345", b"1"]
    assert outbox.put(b"1234567890")


def test_session_overflow_becomes_slow_consumer_close() -> None:
    session = make_session(frames=2)
    for _ in range(3):
        session.send(b"frame")
    assert session.closing is not None
    assert session.closing.code == CloseCode.SLOW_CONSUMER
    frames = session.outbox.take()
    assert len(frames) == 1 and b"slow_consumer" in frames[0]  # queued frames were discarded
    session.send(b"late")
    assert session.outbox.take() == []  # nothing is queued once closing


def test_session_close_flushes_then_closes_once() -> None:
    session = make_session()
    session.send(b"a")
    session.close(CloseCode.GOING_AWAY, "bye", error=ErrorCode.SHUTTING_DOWN)
    session.close(CloseCode.NORMAL, "again")
    assert session.closing is not None and session.closing.code == CloseCode.GOING_AWAY
    frames = session.outbox.take()
    assert frames[0] == b"a" and b"shutting_down" in frames[1]


def test_session_fail_without_close_code_keeps_session_open() -> None:
    session = make_session()
    session.fail(ErrorCode.BAD_JSON, "nope")
    assert session.closing is None
    assert b"bad_json" in session.outbox.take()[0]


def test_rate_limiter_burst_then_refill() -> None:
    limiter = RateLimiter(rate=2, burst=3, now=0.0)
    assert [limiter.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(0.5)  # one token back after half a second at 2/s
    assert not limiter.allow(0.5)
    assert [limiter.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


async def test_session_send_wakes_its_writer() -> None:
    session = make_session()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.outbox.wait)
        await trio.testing.wait_all_tasks_blocked()
        assert session.outbox.writer_parked
        session.send(b"x")
    assert session.outbox.take() == [b"x"]


class Recorder:
    """A DirectWrite that takes ``accept`` bytes of each write and keeps the rest as the tail."""

    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.writes: list[bytes] = []
        self.tail = b""

    @property
    def tail_pending(self) -> bool:
        return bool(self.tail)

    def write(self, data: bytes) -> bool:
        if self.tail or self.accept == 0:
            return False
        self.writes.append(data[: self.accept])
        self.tail = data[self.accept :]
        return True


async def test_flusher_writes_directly_and_leaves_the_rest_to_the_writer() -> None:
    flusher = Flusher()
    session = make_session(frames=10)
    recorder = Recorder(accept=5)
    session.direct_write, session.flusher = recorder, flusher
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        nursery.start_soon(session.outbox.wait)
        await trio.testing.wait_all_tasks_blocked()
        session.send(b"abc")
        session.send(b"defgh")
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.writes == [b"abcde"]  # one write for both frames
        assert recorder.tail == b"fgh"  # the rest stays with the stream, ahead of any other write
        assert session.outbox.take() == []
        assert not session.outbox.writer_parked  # woken to send the rest
        session.outbox.put(b"next")
        session.flush_now()  # the writer is busy with the tail: no direct write now
        assert recorder.writes == [b"abcde"]
        assert session.outbox.take() == [b"next"]
        nursery.cancel_scope.cancel()


async def test_flusher_never_writes_while_the_writer_is_busy() -> None:
    flusher = Flusher()
    session = make_session()
    recorder = Recorder(accept=100)
    session.direct_write, session.flusher = recorder, flusher
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flusher.run)
        session.send(b"late")  # no writer parked: it is busy writing an earlier tail
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.writes == []
        assert session.outbox.take() == [b"late"]
        nursery.cancel_scope.cancel()
