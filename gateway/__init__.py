"""Real-time WebSocket gateway for Pydio Cells, on Trio.

Where things live (one concept per module; each package's ``__init__`` lists its own modules).
Modules marked *pure* load no I/O library (trio, SQLAlchemy, h11, PyJWT, trio-websocket):
``tests/test_structure.py`` imports them in a fresh interpreter to keep it so, and keeps every
module under 400 lines.

- ``cli``        command line: ``main(argv) -> int`` (serve, token, publish, ...)
- ``config``     settings: defaults < TOML file < ``GATEWAY_*`` environment < flags
- ``app``        ``Gateway``: wires the services below into one root nursery (``run_services``,
                 which the tests run too); graceful shutdown
- ``protocol``   wire format: client messages, server frames, error and close codes (pure)
- ``identity``   token -> ``Identity`` (user, profile, roles, workspaces): ``jwt`` verified locally,
                 ``cells`` asked to Cells' REST API; the single-flight cache; ``whois`` output
- ``topics``     the platform's topic names (pure)
- ``bus``        the ``Bus`` protocol and its engines (in-memory; NATS)
- ``cells``      Cells' bus payloads: gob envelope, framings, protobuf schema, Go protojson rules
- ``events``     routing of the platform's topics (tree, tasks, idm, activity) + debounce,
                 and the payload codecs (the gateway's JSON; Cells') (pure)
- ``refresh``    cells identity: re-resolve the sessions an identity event touches
- ``hub``        session registry, audience indexes, fan-out without awaiting any session
- ``session``    per-connection state: outbox, rate limit, close requests
- ``timers``     a session's deadlines (subscribe, token expiry, keepalive) as a pure state machine
- ``server``     the WebSocket listener: handshake, reader and writer loops, timer checks
- ``handshake``  who may open a WebSocket: paths, Origin, limits, and the refusals (pure)
- ``endpoints``  what each socket path adds: the events socket; the chat socket is ``chat``
- ``wsconn``     the only place that reaches into trio-websocket internals
- ``dispatch``   topic subscription tasks: bus -> debounce -> routing -> hub
- ``admin``      the admin HTTP listener (h11): health, metrics, publish and token API, playground
- ``chat``       chat rooms, presence, posting rules and the SQL history store
- ``httpclient`` pooled outbound HTTP (Cells' REST API, node-access checks)
- ``metrics``, ``logs``, ``paths``: Prometheus metrics, log format, node-path arithmetic
"""

__version__ = "0.1.0"
