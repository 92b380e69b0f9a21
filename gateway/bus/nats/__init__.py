"""The NATS bus engine.

- ``protocol``      the sans-IO wire format: parser, events, commands
- ``servers``       broker URLs, CONNECT options, the prefix of Cells' subjects (pure)
- ``connection``    one established broker connection, and how it is opened
- ``outbox``        the bounded publish buffer
- ``subscription``  one subscription's bounded queue
- ``bus``           ``NatsBus``: the ``Bus`` protocol over all of the above, reconnecting
"""
