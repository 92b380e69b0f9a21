"""Job task events (``TaskChangeEvent``): to the user who triggered the task.

Tasks owned by the platform's system user go to every admin session instead. The message is the
platform's event whole (``TaskUpdated``, ``Job``, ``NanoStamp``, ``StatusMeta``): the browser
recognises it by ``TaskUpdated`` and ``Job`` and drops updates older than the last ``NanoStamp``
it saw for the job.
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
    return [Delivery(dict(event), (audience,))]
