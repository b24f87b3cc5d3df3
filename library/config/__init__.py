"""The one run-config schema: TOML + CLI overrides -> a validated, frozen FurnaceConfig.

Importing this package never imports torch, so a bad config fails before anything heavy loads.
"""

from .aliases import FLAT_ALIASES
from .cli import exit_on_config_error, format_help, parse_cli
from .errors import ConfigError
from .loader import dump_toml, load_config, loads_config, save_resolved
from .schema import FurnaceConfig

__all__ = [
    "FLAT_ALIASES",
    "ConfigError",
    "FurnaceConfig",
    "dump_toml",
    "exit_on_config_error",
    "format_help",
    "load_config",
    "loads_config",
    "parse_cli",
    "save_resolved",
]
