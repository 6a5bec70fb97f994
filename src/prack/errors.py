"""One root exception for Prack; only the CLI turns these into exit codes."""


class PrackError(Exception):
    """Root of every error Prack raises on purpose."""


class ConfigError(PrackError):
    """A configuration file, variable or flag is wrong. The message names the
    source, the key and the reason, in one line."""


class StartupError(PrackError):
    """The server cannot start (a port in use, a runtime dir not writable...)."""
