"""The NATS bus engine.

- ``protocol``       the sans-IO wire format: parser, events, commands
- ``headers``        the header block of HMSG/HPUB: status line and fields (pure)
- ``servers``        broker URLs, CONNECT options, the prefix of Cells' subjects (pure)
- ``connection``     one established broker connection, and how it is opened
- ``outbox``         the bounded publish buffer
- ``subscription``   one subscription's bounded queue (payloads, or whole messages)
- ``requests``       request/reply: the bus's wildcard reply inbox, no responders, timeouts
- ``engine``         the connection loop: reader and writer tasks, reconnects, subscriber table
- ``bus``            ``NatsBus``: the ``Bus`` protocol over all of the above, plus what JetStream needs
- ``jetstream_api``  JetStream's wire API: subjects, request bodies, responses, ack subjects (pure)
- ``jetstream``      ``JetStream``: streams, publishing with acknowledgement, ordered consumers
- ``ordered``        ``OrderedConsumer``: a stream's messages in order, recreated on any gap
"""
