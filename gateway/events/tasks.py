"""Job task events (``TaskChangeEvent``): to the user who triggered the task.

Tasks owned by the platform's system user go to every admin session instead. The message is the
platform's ``{"TaskUpdated": {...}, "Job": {...}}`` unchanged, which is how the browser client
recognises it.
"""

from __future__ import annotations

from gateway.events.model import Audience, Delivery, JsonObject, ToAdmins, ToUser
from gateway.identity import SYSTEM_USER


def route(event: JsonObject) -> list[Delivery]:
    task = event.get("TaskUpdated")
    if not isinstance(task, dict):
        return []
    owner = task.get("TriggerOwner")
    if not isinstance(owner, str) or not owner:
        return []
    audience: Audience = ToAdmins() if owner == SYSTEM_USER else ToUser(owner)
    message: JsonObject = {"TaskUpdated": task}
    if "Job" in event:
        message["Job"] = event["Job"]
    return [Delivery(message, (audience,))]
