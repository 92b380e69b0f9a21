"""Pure routing of the platform's events: (topic, event) -> deliveries, each with its audience.

One module per topic family (``tree``, ``tasks``, ``idm``, ``activity``), the tree debouncer in
``debounce``, the shared vocabulary in ``model``, the bus payload codecs in ``codec``.
"""

from __future__ import annotations

from gateway.events import activity, idm, tasks, tree
from gateway.events.model import Covering, Delivery, JsonObject
from gateway.topics import ACTIVITY_TOPIC, IDM_TOPIC, META_TOPIC, TASKS_TOPIC, TREE_TOPIC


def route(topic: str, event: JsonObject, covering: Covering) -> list[Delivery]:
    """Every delivery one event produces. Unknown topics produce none."""
    if topic in (TREE_TOPIC, META_TOPIC):
        return tree.route(event, covering)
    if topic == TASKS_TOPIC:
        return tasks.route(event)
    if topic == IDM_TOPIC:
        return idm.route(event)
    if topic == ACTIVITY_TOPIC:
        return activity.route(event)
    return []
