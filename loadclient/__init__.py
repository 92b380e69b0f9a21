"""The load client: many WebSocket sessions in one process of their own, checking what they receive.

One client serves the reliability tests (``tests/reliability.py``) and the benchmarks (``bench/``).
It runs on picows (a WebSocket protocol written in Cython) over uvloop, so that reading a message
costs the client a small fraction of what serving it costs the server under test: a pure-Python
client would be as busy as the server and would be what is measured.

    python -m loadclient SPEC.json

The spec (:class:`loadclient.interface.Spec`) names the URL, the sessions' tokens, whether sessions
reconnect when dropped (or resume after the last event they had, dropping their connections at
random on purpose), whether they answer pings, and what is checked in every message: nothing,
a stress plan (exactly once, in order, only for the session's own workspaces and user, paths
rewritten as the protocol says) or benchmark markers (exactly once and in order per phase, with
publish-to-deliver latency). The process talks over stdin and stdout in lines
(:mod:`loadclient.interface`).

- ``interface``   the spec, the commands and the lines drivers read (pure)
- ``connection``  one session: picows connection, subscribe, reconnect
- ``checks``      what is checked in every message, and the report
- ``resume``      resume mode: positions, drops, what a replay resends (pure)
- ``oracle``      the reliability tests' check: every message against a stress plan
- ``markers``     the benchmarks' check: marked events, exactly once and in order, latency
- ``plan``        the deterministic multi-tenant workload and its oracle (pure)
- ``marker``      the benchmark's event marker (pure)
- ``histogram``   mergeable latency histograms (pure)
"""
