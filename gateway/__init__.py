"""Real-time WebSocket gateway for Pydio Cells, on Trio.

Where things live (one concept per module):

- ``cli``        command line: ``main(argv) -> int`` (serve, token, publish, ...)
- ``config``     settings: defaults < TOML file < ``GATEWAY_*`` environment < flags
- ``app``        wires the services below into one root nursery; graceful shutdown
- ``protocol``   sans-IO wire format: client messages, server frames, error and close codes
- ``auth``       JWT -> ``Identity`` (user, profile, roles, workspaces, expiry)
- ``bus``        the ``Bus`` protocol and its engines (in-memory; NATS)
- ``events``     pure routing of the platform's topics (tree, tasks, idm, activity) + debounce
- ``hub``        session registry, audience indexes, fan-out without awaiting any session
- ``session``    per-connection state: outbox, rate limit, close requests
- ``server``     the WebSocket listener: handshake checks, reader and writer loops
- ``wsconn``     the only place that reaches into trio-websocket internals
- ``dispatch``   topic subscription tasks: bus -> debounce -> routing -> hub
- ``admin``      the admin HTTP listener (h11): health, metrics, publish API
- ``chat``       chat rooms, presence and the SQL history store
- ``httpclient`` the small outbound HTTP client (node-access callback)
- ``metrics``, ``logs``, ``paths``: Prometheus metrics, log format, node-path arithmetic
"""

__version__ = "0.1.0"
