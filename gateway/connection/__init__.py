"""The server side of a WebSocket connection, owned by the gateway (wsproto for the protocol).

- ``transport``  bytes in and out of a socket: non-blocking writes on a real socket, or any trio
                 stream (TLS, the tests' memory streams) through an awaiting writer
- ``upgrade``    the HTTP/1.1 upgrade request read with h11, and its answers (101, or a refusal)
- ``frames``     frames after the upgrade (wsproto): inbound messages within limits, control frames
- ``writer``     the one writer of a socket: whatever the kernel takes at once, the rest by a task
                 that waits for the socket, and how long it has been waiting

Why not trio-websocket, which the tests and ``gateway watch`` use as a client: it writes each
message with its own ``send_all`` (no writing of already-framed bytes, so no encoding once for many
sessions and no batching), has no send timeout, and costs a task and about 21 KiB per connection
before the gateway adds anything (README, "Why the server owns its connections").
"""
