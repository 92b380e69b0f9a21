"""Pure routing of the platform's events: (topic, event) -> deliveries, each with its audience.

One module per topic family (``tree``, ``tasks``, ``idm``, ``activity``), the tree debouncer in
``debounce``, the shared vocabulary in ``model``. :func:`messages_for` applies the rules to one
identity: it is the specification in code, used by the tests and checked against the hub.
"""

from __future__ import annotations

from gateway.events import activity, idm, tasks, tree
from gateway.events.model import Covering, Delivery, JsonObject, covering_from
from gateway.identity import Identity
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


def messages_for(topic: str, event: JsonObject, identity: Identity) -> list[JsonObject]:
    """What one session with ``identity`` receives for this event (after debouncing)."""
    deliveries = route(topic, event, covering_from(identity.workspaces))
    return [d.message for d in deliveries if d.reaches(identity)]
