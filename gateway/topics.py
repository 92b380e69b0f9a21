"""The platform's topic names, as its services publish them. Pure: no I/O, no engine.

The five event topics feed the events socket; the chat topic carries this gateway's own chat
traffic between instances (never Cells' chat payloads).
"""

from __future__ import annotations

from typing import Final

TREE_TOPIC: Final = "topic.pydio.tree.nodes.changes"
META_TOPIC: Final = "topic.pydio.meta.nodes.changes"
TASKS_TOPIC: Final = "topic.pydio.tasks.event"
IDM_TOPIC: Final = "topic.pydio.idm.event"
ACTIVITY_TOPIC: Final = "topic.pydio.activity.event"
CHAT_TOPIC: Final = "topic.pydio.chat.event"

EVENT_TOPICS: Final = (TREE_TOPIC, META_TOPIC, TASKS_TOPIC, IDM_TOPIC, ACTIVITY_TOPIC)
# Topics the admin publish API accepts. Chat events are the chat service's own, never injected.
PUBLISHABLE_TOPICS: Final = frozenset(EVENT_TOPICS)
TREE_TOPICS: Final = frozenset((TREE_TOPIC, META_TOPIC))
