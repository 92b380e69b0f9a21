"""Identity: who a session is and what it may see, resolved from the token it presents.

- ``model``  the pure types every other module reads: ``Identity``, ``Workspace``, ``FolderRule``
- ``resolver`` the ``Resolver`` interface (resolve, refresh, forget)
- ``claims`` claims -> Identity, as the platform shapes them (pure)
- ``jwt``    ``JwtResolver``: tokens verified locally with PyJWT (``identity = "jwt"``, the default)
- ``mint``   HS256 tokens shaped like the platform's (``gateway token``, the playground)
- ``cells``  ``CellsResolver``: any token the platform issued, resolved through its REST API
- ``cache``  answers kept per token, one lookup for concurrent requests
- ``describe`` an Identity as an operator reads it (``gateway whois``)

``Resolver.resolve(token) -> Identity`` is the one interface the rest of the gateway uses; nothing
outside this package knows which resolver produced an Identity. Importing this package loads only
the pure model.
"""

from gateway.identity.model import PROFILES, SYSTEM_USER, FolderRule, Identity, Workspace

__all__ = ["PROFILES", "SYSTEM_USER", "FolderRule", "Identity", "Workspace"]
