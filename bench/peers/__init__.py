"""The peers the gateway is compared with: broadcast servers a user could pick instead of it.

- ``common``           what both do alike: the subscribe check (PyJWT), the HTTP publish API
- ``websockets_peer``  asyncio and ``websockets.broadcast()``
- ``picows_peer``      picows (a WebSocket protocol in Cython) on uvloop: the fastest Python
                       server we know of

Each offers the gateway's interface for the benchmark's workload and does the least a fair
competitor must: verify the token of a session's first message, answer ``subscribed``, and send
every published event to every subscribed session, serialised once. No per-workspace routing.
"""
