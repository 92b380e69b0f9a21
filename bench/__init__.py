"""Benchmarks. ``python -m bench.broadcast`` compares the gateway with a ``websockets`` peer.

- ``broadcast``   the orchestrator: options, phases, main (``make bench``)
- ``processes``   the server under test, the load-client processes, /proc readings
- ``peer``        the asyncio + ``websockets.broadcast()`` server compared with the gateway
- ``workload``    the events published and the marker the load client finds in them
- ``report``      figures and the final table
"""
