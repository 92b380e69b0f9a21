"""Settings: built-in defaults < TOML file < ``GATEWAY_*`` environment < command-line flags.

Every setting is declared once, in :class:`Settings`, with its environment variable, its help text
and whether it is a secret; the configuration reference in ``docs/OPERATIONS.md`` and
``gateway check-config`` are generated from these declarations.

- ``settings``   the declarations (``Settings``), ``ConfigError``
- ``loading``    the layers merged and values coerced to their types
- ``checks``     values that cannot work, refused with the setting named
- ``reference``  the settings masked for display, and the reference table of the docs
"""

from gateway.config.checks import parse_host_port, validate
from gateway.config.loading import load
from gateway.config.reference import effective, reference_markdown
from gateway.config.settings import ConfigError, Settings, env_name, fields

__all__ = [
    "ConfigError",
    "Settings",
    "effective",
    "env_name",
    "fields",
    "load",
    "parse_host_port",
    "reference_markdown",
    "validate",
]
