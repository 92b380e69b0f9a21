"""An Identity as an operator reads it (``gateway whois``): who, and what they may see. Pure."""

from __future__ import annotations

from typing import Any

from gateway.identity.model import Identity, Workspace

ACCESS_WORDS = {"r": "read", "w": "write", "rw": "read, write"}


def describe(identity: Identity) -> str:
    lines = [
        f"user      {identity.user}",
        f"uuid      {identity.sub}",
        f"profile   {identity.profile}",
        f"roles     {', '.join(identity.roles) or '(none)'}",
    ]
    if identity.group_path:
        lines.append(f"group     {identity.group_path}")
    if identity.expires_at is not None:
        lines.append(f"expires   {int(identity.expires_at)} (sessions close then)")
    lines.append(f"workspaces ({len(identity.workspaces)}): events under these roots reach the user")
    for ws in identity.workspaces:
        lines.extend(_workspace_lines(ws))
    return "\n".join(lines)


def _workspace_lines(ws: Workspace) -> list[str]:
    lines = [f"  {ws.slug}  (uuid {ws.uuid}, {ACCESS_WORDS.get(ws.permissions, ws.permissions)})"]
    for root in ws.roots:
        key = ws.root_key(root)
        shown = f"{ws.slug}/{key}/..." if key else f"{ws.slug}/..."
        lines.append(f"    root {root}/...  shown as {shown}")
    for rule in ws.folder_rules:
        effect = "denied" if rule.deny else ("readable" if rule.read else "not readable")
        lines.append(f"    folder {rule.path}: {effect}")
    return lines


def describe_json(identity: Identity) -> dict[str, Any]:
    return {
        "user": identity.user,
        "uuid": identity.sub,
        "profile": identity.profile,
        "roles": list(identity.roles),
        "groupPath": identity.group_path,
        "expiresAt": identity.expires_at,
        "workspaces": [
            {
                "uuid": ws.uuid,
                "slug": ws.slug,
                "permissions": ws.permissions,
                "roots": [{"path": root, "key": ws.root_key(root)} for root in ws.roots],
                "folders": [{"path": r.path, "deny": r.deny, "read": r.read} for r in ws.folder_rules],
            }
            for ws in identity.workspaces
        ],
    }
