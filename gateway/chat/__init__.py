"""Chat: rooms, presence and the SQL history store.

- ``protocol``  sans-IO chat wire format: parse JOIN/LEAVE/POST/HISTORY/DELETE_MSG, render frames
- ``rules``     who may join which room (pure)
- ``access``    the node check asked to the platform, and ``check_room`` (rules + node check)
- ``service``   the chat endpoint: the requests
- ``lookup``    which stored room a request names, and when a missing one is created
- ``history``   one HISTORY page sent: bounded in messages and in bytes
- ``rooms``     this instance's sessions in each room, and the fan-out to them
- ``presence``  who is in which room over time: timeouts, departures, returns
- ``sweeper``   rooms with no member and no message deleted after ``chat_empty_room_ttl``
- ``sanitise``  what users write, made safe to store and show: text, labels, identifiers (pure)
- ``posting``   how often a user may post: a bounded rate per user
- ``events``    the chat events between instances, on the bus (pure)
- ``records``   what the store returns and raises (pure)
- ``store``     ``ChatStore``: reads on a thread pool, writes through one group-committing writer
- ``batches``   one write batch, applied in the writer's thread
- ``sql``       the SQL statements and read/write operations
- ``posts``     posts stored in batches (seq allocation, retries recognised)
- ``faults``    which database errors are outages and which are bugs
- ``models``    the SQL schema (rooms, members, messages) and engine setup for SQLite and PostgreSQL
- ``migrate``   Alembic migrations, run programmatically (``upgrade(url)``, ``current(url)``)
"""
