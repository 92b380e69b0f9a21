"""Real-time WebSocket gateway for Pydio Cells, on Trio.

Where things live (one concept per module; each package's ``__init__`` lists its own modules).
Modules marked *pure* load no I/O library (trio, SQLAlchemy, h11, PyJWT, trio-websocket):
``tests/test_structure.py`` imports them in a fresh interpreter to keep it so, and keeps every
module under 400 lines.

- ``cli``        command line: ``main(argv) -> int`` (serve, token, publish, ...)
- ``tuning``     process-wide settings for thousands of long-lived sessions (garbage collector)
- ``watch``      ``gateway watch``: subscribe as a user, print what they receive (trio-websocket)
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
- ``delivery``   the shared log of routed events, one stream per audience, each session's cursor
                 over its streams (pure)
- ``hub``        session registry, one stream per audience, fan-out without awaiting any session
- ``flusher``    one task that writes for every session a fan-out reached
- ``session``    per-connection state: what it may see, its feed and writer, rate limit, close
- ``timers``     a session's deadlines (subscribe, token expiry, keepalive) as a pure state machine
- ``connection`` the server side of a WebSocket on wsproto: transport, upgrade, frames, writer
- ``server``     the WebSocket listener: upgrade checks, one reader task per session, closing
- ``edge``       TLS on the listeners (reloaded on SIGHUP); the client's address behind trusted
                 proxies (X-Forwarded-For, Forwarded, PROXY protocol)
- ``commands``   what a session's messages do: subscribe, unsubscribe, the endpoint's requests
- ``handshake``  who may open a WebSocket: paths, Origin, limits, and the refusals (pure)
- ``admission``  the pending and session budgets, per address key and in all
- ``endpoints``  what each socket path adds: the events socket; the chat socket is ``chat``
- ``dispatch``   topic subscription tasks: bus -> debounce -> routing -> hub
- ``history``    the history shared by instances in a JetStream stream (``history_backend``):
                 the stream feeds the router, release records make every instance debounce alike
- ``admin``      the admin HTTP listener (h11): health, metrics, publish and token API, playground
- ``chat``       chat rooms, presence, posting rules and the SQL history store
- ``httpclient`` pooled outbound HTTP (Cells' REST API, node-access checks)
- ``devmode``    what ``serve --dev`` changes (generated keys, local Origins); local listener URLs
- ``metrics``, ``logs``, ``paths``: Prometheus metrics, log format, node-path arithmetic
"""

__version__ = "0.1.0"
