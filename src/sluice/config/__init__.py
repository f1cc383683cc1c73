"""Config: YAML with environment expansion, typed models, validation with line numbers."""

from sluice.config.loader import LoadedConfig, build_config_model, load_config, load_config_text
from sluice.config.problems import ConfigError, Problem

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "Problem",
    "build_config_model",
    "load_config",
    "load_config_text",
]
