"""Exceptions shared by modules that must not import each other."""


class ConfigError(ValueError):
    """A config value out of range; raised before any model or data is loaded."""
