"""Chat: rooms, presence and the SQL history store.

- ``protocol``  sans-IO chat wire format: parse JOIN/LEAVE/POST/HISTORY/DELETE_MSG, render frames
- ``access``    who may join which room and post there (GLOBAL, WORKSPACE, USER, NODE checks)
- ``service``   the chat endpoint: requests, fan-out over the bus, presence sweeps
- ``models``    the SQL schema (rooms, members, messages) and engine setup for SQLite and PostgreSQL
- ``migrate``   Alembic migrations, run programmatically (``upgrade(url)``, ``current(url)``)
- ``store``     ``ChatStore``: history reads on a thread pool, writes through one group-committing writer
"""
