"""Cells' own bus payloads (``bus_format = "cells"``), decoded into the gateway's event model. Pure.

- ``envelope``   the three framings of a payload (queue form, gob, bare body)
- ``gob``        the gob stream Cells' NATS driver writes: metadata, then body
- ``schema``     the project's protobuf schema of Cells' messages (``*.proto``; code from ``make proto``)
- ``protojson``  messages printed as Go's protojson prints them
- ``codec``      ``CellsCodec``: payload -> event
"""
