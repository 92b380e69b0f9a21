"""The history stream: created when missing, refused with the fix when it cannot serve.

The stream captures the platform's event subjects as they are published (Cells publishes plain
NATS messages: a stream with those subjects stores them with no change to the publisher), and the
gateway's release records. Its limits are the memory history's settings.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Final

from gateway.bus.nats.jetstream import JetStream, JetStreamError, JetStreamUnavailable, StreamInfo
from gateway.config import ConfigError, Settings
from gateway.history.records import record_subject

log = logging.getLogger("gateway.history")

# How long the stream remembers a record's id to drop the copies other instances publish.
MAX_DUPLICATE_WINDOW: Final = 120.0


def stream_subjects(event_subjects: list[str], stream: str) -> tuple[str, ...]:
    return (*event_subjects, record_subject(stream))


def epoch_of(info: StreamInfo) -> str:
    """The epoch of the stream's positions: another stream, or the same name created again, has
    another history, so a position of it gets a gap, never a replay of the wrong events."""
    return hashlib.sha256(f"{info.name}|{info.created}".encode()).hexdigest()[:8]


async def ensure_stream(js: JetStream, settings: Settings, subjects: tuple[str, ...]) -> StreamInfo:
    """The stream's state, after creating it if missing; ConfigError naming the fix otherwise."""
    name = settings.history_stream
    try:
        info = await js.stream_info(name)
        if info is None:
            info = await js.create_stream(
                name,
                subjects,
                max_msgs=settings.history_size,
                max_age=settings.history_seconds,
                duplicate_window=min(MAX_DUPLICATE_WINDOW, settings.history_seconds),
            )
            log.info(
                "created the JetStream stream %s for the event history (subjects %s)",
                name,
                ", ".join(subjects),
            )
    except JetStreamUnavailable as exc:
        raise ConfigError(
            f"history_backend = jetstream, but JetStream does not answer on {settings.bus_url} ({exc}): "
            "enable JetStream on the NATS server (nats-server -js, or a `jetstream {}` block in its "
            "configuration), or set history_backend = memory"
        ) from None
    except JetStreamError as exc:
        raise ConfigError(
            f"history_backend = jetstream: cannot create the stream {name} ({exc}); another stream may "
            "already capture these subjects: remove it or set history_stream to its name"
        ) from None
    if set(info.subjects) != set(subjects):
        raise ConfigError(
            f"the JetStream stream {name} exists with subjects {', '.join(info.subjects) or 'none'}, "
            f"not the gateway's ({', '.join(subjects)}): remove it (nats stream rm {name}) to let the "
            "gateway create it, or set history_stream to another name"
        )
    return info
