"""A session's feed (streams read from a cursor, interleaved with its own frames), its writer, its
bounds, the token bucket, and the close it carries. No sockets: a recording transport."""

from __future__ import annotations

import dataclasses

import trio
import trio.testing

from gateway.connection.transport import TransportClosed
from gateway.connection.writer import Writer
from gateway.delivery.feed import Feed
from gateway.delivery.log import EventLog
from gateway.delivery.streams import Stream
from gateway.events.model import Delivery, ToUser, ToWorkspaceUuid
from gateway.flusher import Flusher
from gateway.hub import Hub
from gateway.identity import Identity, Workspace
from gateway.protocol import CloseCode, ErrorCode, json_frame
from gateway.session import RateLimiter, Session
from tests.helpers import hand_session, make_hub, pending_frames

WS = Workspace("w1", "files", ("ds/files",))
ALICE = Identity(user="alice", sub="u-alice", profile="standard", workspaces=(WS,))


class Recorder:
    """A transport that takes ``accept`` bytes per write without waiting (0: would block), and
    everything once ``send_all`` is awaited and ``opened`` is set."""

    direct = True

    def __init__(self, accept: int = 1 << 30) -> None:
        self.accept = accept
        self.written = bytearray()
        self.opened = trio.Event()
        self.closed = False

    def try_send(self, data: bytes | memoryview) -> int:
        if self.closed:
            raise TransportClosed("closed")
        taken = bytes(data[: self.accept])
        self.written += taken
        return len(taken)

    async def send_all(self, data: bytes | memoryview, progress: object = None) -> None:
        await self.opened.wait()
        self.written += bytes(data)

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.sleep_forever()
        raise AssertionError

    async def linger_close(self, grace: float) -> None:
        pass

    async def aclose(self) -> None:
        pass


W1 = ToWorkspaceUuid("w1")


def event(hub: Hub, path: str, audience: ToWorkspaceUuid | ToUser = W1) -> bytes:
    message = {"Target": {"Path": path}}
    hub.fan_out("topic.pydio.tree.nodes.changes", [Delivery(message, (audience,))])
    return json_frame(message)


def subscribed(hub: Hub, identity: Identity = ALICE, *, max_lag: int = 10_000_000) -> Session:
    session = hand_session(hub, max_lag=max_lag)
    hub.start_delivering(session, identity)
    session.timers.subscribed(None)
    return session


# -- the feed ----------------------------------------------------------------------------------


def test_feed_interleaves_own_frames_at_the_head_they_were_queued_at() -> None:
    hub = make_hub()
    session = subscribed(hub)
    first = event(hub, "/a")
    session.send(b"reply-1")
    second = event(hub, "/b")
    session.send(b"reply-2")
    assert pending_frames(session) == [first, b"reply-1", second, b"reply-2"]
    assert pending_frames(session) == []


def test_feed_takes_a_delivery_once_through_two_audiences() -> None:
    hub = make_hub()
    session = subscribed(hub)
    message = {"x": 1}
    hub.fan_out("t", [Delivery(message, (ToUser("alice"), W1))])
    after = event(hub, "/after", ToUser("alice"))
    assert pending_frames(session) == [json_frame(message), after]


def test_feed_gather_stops_at_an_event_boundary_past_the_limit() -> None:
    stream: Stream[object] = Stream("k")
    log = EventLog(max_entries=10, max_age=60)
    for offset in (1, 2, 3):
        entry = log.append("t", {}, [], 0.0)
        stream.append((offset, 0, b"x" * 10, None, entry))
        stream.append((offset, 1, b"y" * 10, None, entry))
    feed = Feed(0)
    feed.streams = [stream]
    assert feed.gather(3, None, limit=15) == [b"x" * 10, b"y" * 10]  # all of offset 1
    assert feed.cursor == 1
    assert feed.lag() == 40
    assert len(feed.gather(3, None, limit=1000)) == 4 and feed.cursor == 3


def test_a_session_joining_late_starts_at_the_head() -> None:
    hub = make_hub()
    early = subscribed(hub)
    event(hub, "/before")
    late = subscribed(hub, dataclass_replace(ALICE, user="bob"))
    after = event(hub, "/after")
    assert pending_frames(late) == [after]
    assert len(pending_frames(early)) == 2


def dataclass_replace(identity: Identity, *, user: str) -> Identity:
    return dataclasses.replace(identity, user=user)


def test_unsubscribe_keeps_what_was_routed_before_it() -> None:
    hub = make_hub()
    session = subscribed(hub)
    routed = event(hub, "/a")
    hub.stop_delivering(session)
    event(hub, "/b")
    assert pending_frames(session) == [routed]


# -- bounds and the close ----------------------------------------------------------------------


def test_own_frames_past_the_lag_bound_close_with_4008_and_drop_the_queue() -> None:
    session = hand_session(make_hub(), max_lag=25)
    session.send(b"0123456789")
    session.send(b"0123456789")
    assert session.closing is None
    session.send(b"0123456789")
    assert session.closing is not None and session.closing.code == CloseCode.SLOW_CONSUMER
    frames = pending_frames(session)
    assert len(frames) == 1 and b"slow_consumer" in frames[0]  # what was queued was discarded
    session.send(b"late")
    assert pending_frames(session) == []  # nothing is queued once closing


def test_stream_lag_past_the_bound_closes_only_that_member() -> None:
    hub = make_hub()
    slow = subscribed(hub, max_lag=1000)
    fast = subscribed(hub, dataclass_replace(ALICE, user="bob"))
    flusher = Flusher(hub)
    for i in range(40):
        event(hub, f"/f{i}")
        pending_frames(fast)  # bob reads everything; alice reads nothing
        flusher.flush(hub.take_dirty(), {})
    assert slow.closing is not None and slow.closing.code == CloseCode.SLOW_CONSUMER
    assert fast.closing is None
    [stream] = [s for s in fast.feed.streams if s.key == ToWorkspaceUuid("w1")]
    assert stream.items == [] and stream.members == {fast}  # nothing kept for anybody


def test_close_sends_what_is_queued_then_the_error_then_once() -> None:
    session = hand_session(make_hub())
    session.send(b"a")
    session.close(CloseCode.GOING_AWAY, "bye", error=ErrorCode.SHUTTING_DOWN)
    session.close(CloseCode.NORMAL, "again")
    assert session.closing is not None and session.closing.code == CloseCode.GOING_AWAY
    frames = pending_frames(session)
    assert frames[0] == b"a" and b"shutting_down" in frames[1]


def test_fail_without_close_code_keeps_the_session_open() -> None:
    session = hand_session(make_hub())
    session.fail(ErrorCode.BAD_JSON, "nope")
    assert session.closing is None
    assert b"bad_json" in pending_frames(session)[0]


def test_rate_limiter_burst_then_refill() -> None:
    limiter = RateLimiter(rate=2, burst=3, now=0.0)
    assert [limiter.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(0.5)  # one token back after half a second at 2/s
    assert not limiter.allow(0.5)
    assert [limiter.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped at burst


# -- the writer --------------------------------------------------------------------------------


async def test_writer_writes_at_once_and_leaves_the_rest_to_its_task(autojump_clock: object) -> None:
    hub = make_hub()
    session = subscribed(hub)
    transport = Recorder(accept=5)
    async with trio.open_nursery() as nursery:
        session.writer = Writer(transport, session.next_chunk, nursery.start_soon)
        session.send(b"abc")
        session.send(b"defgh")
        session.flush()
        assert bytes(transport.written) == b"abcde"  # one write for both frames
        assert session.writer.busy and session.writer.pending == 3
        session.send(b"next")
        session.flush()  # the task owns the socket until its tail is out: no write now
        assert bytes(transport.written) == b"abcde"
        await trio.sleep(1)
        transport.opened.set()
        await trio.testing.wait_all_tasks_blocked()
        assert bytes(transport.written) == b"abcdefghnext"
        assert not session.writer.busy
        nursery.cancel_scope.cancel()


async def test_writer_stall_closes_the_session_4008(autojump_clock: object) -> None:
    session = subscribed(make_hub(), max_lag=1 << 20)
    transport = Recorder(accept=0)
    async with trio.open_nursery() as nursery:
        session.writer = Writer(transport, session.next_chunk, nursery.start_soon)
        session.send(b"x" * 100)
        session.flush()
        start = trio.current_time()
        session.check_timers(start + 9.9)
        assert session.closing is None
        session.check_timers(start + 10.0)
        assert session.closing is not None and session.closing.code == CloseCode.SLOW_CONSUMER
        nursery.cancel_scope.cancel()


async def test_writer_stops_writing_once_the_transport_is_gone() -> None:
    session = hand_session(make_hub())
    transport = Recorder()
    transport.closed = True
    async with trio.open_nursery() as nursery:
        session.writer = Writer(transport, session.next_chunk, nursery.start_soon)
        session.send(b"x")
        session.flush()
        assert session.writer.broken
        nursery.cancel_scope.cancel()
