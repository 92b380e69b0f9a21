"""Activity-stream events (``PostActivityEvent``): to the owner of the inbox, never to the actor.

Only inbox activities or activities owned by a USER pass; the owner's sessions receive them unless
the owner is the actor. Object, origin and target names are cut to their basename so that no
path outside the user's workspaces leaks; the message is tagged ``{"@type": "activity"}``.
"""

from __future__ import annotations

from typing import Final

from gateway import paths
from gateway.events.model import Delivery, JsonObject, ToUser

NAMED_PARTS: Final = ("object", "origin", "target")


def route(event: JsonObject) -> list[Delivery]:
    if event.get("BoxName") != "inbox" and event.get("OwnerType") != "USER":
        return []
    owner = event.get("OwnerId")
    activity = event.get("Activity")
    if not isinstance(owner, str) or not owner or not isinstance(activity, dict):
        return []
    actor = activity.get("actor")
    if isinstance(actor, dict) and actor.get("id") == owner:
        return []
    message = {**event, "Activity": _basenames(activity), "@type": "activity"}
    return [Delivery(message, (ToUser(owner),))]


def _basenames(activity: JsonObject) -> JsonObject:
    out = dict(activity)
    for part in NAMED_PARTS:
        obj = activity.get(part)
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            out[part] = {**obj, "name": paths.basename(obj["name"])}
    return out
