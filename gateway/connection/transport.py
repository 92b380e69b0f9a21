"""Bytes in and out of one connection.

:class:`SocketTransport` owns a real TCP socket: it writes without waiting (what the kernel takes
at once) so that one flusher task can write to thousands of sockets, and waits for the socket only
when its buffer is full. :class:`StreamTransport` wraps any trio stream (TLS, in-memory streams):
every write then goes through ``send_all``, awaited by the connection's writer task.
"""

from __future__ import annotations

import errno
import socket
from typing import Final, Protocol

import trio

# Errors that mean the peer is gone (or the socket was closed under us), not a bug.
GONE: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
LINGER_READ: Final = 65536


class TransportClosed(Exception):
    """The connection is gone: the peer reset it, or it was closed."""


class Transport(Protocol):
    direct: bool  # try_send may write without waiting

    def try_send(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes at once; raises TransportClosed."""
        ...

    async def send_all(self, data: bytes | memoryview, progress: Progress | None = None) -> None: ...

    async def receive_some(self, max_bytes: int) -> bytes:
        """Some bytes, or b"" at the end of the stream (a reset counts as the end)."""
        ...

    async def linger_close(self, grace: float) -> None:
        """Close gracefully: stop writing, read (and drop) until the peer closes or ``grace`` seconds pass."""
        ...

    async def aclose(self) -> None:
        """Close at once (a peer that stopped reading gets no more time)."""
        ...


class Progress(Protocol):
    def wrote(self, count: int) -> None: ...


class SocketTransport:
    direct = True

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def try_send(self, data: bytes | memoryview) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except GONE as exc:
            raise TransportClosed(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise TransportClosed("socket closed") from None
            raise

    async def send_all(self, data: bytes | memoryview, progress: Progress | None = None) -> None:
        view = memoryview(data)
        while view:
            written = self.try_send(view)
            if written:
                view = view[written:]
                if progress is not None:
                    progress.wrote(written)
            else:
                await self._wait_writable()

    async def _wait_writable(self) -> None:
        try:
            await trio.lowlevel.wait_writable(self.sock)
        except trio.ClosedResourceError:
            raise TransportClosed("socket closed") from None

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(self.sock)
                except trio.ClosedResourceError:
                    return b""
                continue
            except (*GONE, OSError):
                return b""
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def linger_close(self, grace: float) -> None:
        # Closing a socket with unread input makes the kernel send a reset, which can destroy the
        # close frame still in flight to the peer: read until the peer's FIN, then close.
        try:
            self.sock.shutdown(socket.SHUT_WR)
            with trio.move_on_after(grace):
                while await self.receive_some(LINGER_READ):
                    pass
        except OSError:
            pass
        finally:
            self.close_now()

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)  # wakes a task waiting on it, with an error
            self.sock.close()


class StreamTransport:
    direct = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    def try_send(self, data: bytes | memoryview) -> int:
        return 0  # every write is awaited by the writer task

    async def send_all(self, data: bytes | memoryview, progress: Progress | None = None) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed(str(exc)) from None
        if progress is not None:
            progress.wrote(len(data))

    async def receive_some(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self.stream.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def linger_close(self, grace: float) -> None:
        with trio.move_on_after(grace):
            await self.stream.aclose()
        await self.aclose()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
