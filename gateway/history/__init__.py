"""History kept in a JetStream stream, shared by several instances (``history_backend = "jetstream"``).

- ``records``    release records: how instances agree on what a debounce released (pure)
- ``sequencer``  what the stream delivers, at which sequence: the same on every instance and in
                 every replay (pure)
- ``stream``     the stream: created when missing, refused with the fix when it cannot serve
- ``backend``    the stream feeding the router, release records published, the fallback to plain
                 subscriptions while JetStream is unreachable
"""
