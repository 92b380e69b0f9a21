"""The event bus: one protocol, several engines.

``MemoryBus`` (default) keeps everything in process; ``NatsBus`` speaks to a real broker so that
several gateways share one stream of events. Both carry opaque ``bytes`` (the platform's JSON) on
the platform's topic names and feed the same router; nothing above this package knows which one is
configured.

- ``base``    the ``Bus`` and ``Subscription`` protocols, ``BusError``
- ``memory``  the in-process engine (default)
- ``nats``    the NATS engine: ``protocol`` (sans-IO wire format), ``bus`` (``NatsBus``)

Importing this package loads nothing: ``nats.protocol`` stays pure.
"""
