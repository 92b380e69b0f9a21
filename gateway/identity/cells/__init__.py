"""``identity = "cells"``: tokens resolved through Cells' REST API.

- ``api``       the REST calls, and how their failures are reported (401, 404, unavailable)
- ``records``   Cells' answers parsed into records (pure)
- ``access``    what a user may see, computed as Cells does: root paths and keys, flattened ACLs,
                sub-folder rules (pure)
- ``resolver``  ``CellsResolver``: resolve on subscribe, recompute on identity events, cache
"""
