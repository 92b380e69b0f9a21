"""Delivery: every event encoded once into a shared log, read by each session from its cursor. Pure.

- ``log``      ``EventLog``: the routed events, each with this process's offset and its public
               position (epoch, sequence: this run's, or the JetStream stream's), bounded by count
               and age (the history a reconnecting client resumes from)
- ``streams``  ``Stream``: the frames one audience (a workspace, a user, a role...) receives, in
               log order, shared by the sessions of that audience
- ``feed``     ``Feed``: one session's cursor over its streams, plus the frames queued for it alone,
               gathered into one write in log order
- ``replay``   what one identity missed after a position, routed again for it as it is now
               (``since``), or the ``Gap`` that says the log cannot tell

Fan-out appends a frame to a stream (once, whatever its number of sessions) and marks the stream;
the flusher then hands each of its sessions everything between its cursor and the head in one
write. A slow reader costs no copy: it is a cursor further back, and is closed when it lags by
more than ``slow_consumer_lag_bytes`` or its socket accepts nothing for ``write_stall_seconds``.
"""
