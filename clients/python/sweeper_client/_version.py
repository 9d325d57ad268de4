"""The client's version: it follows the daemon's (internal/version.ClientVersion)."""

__version__ = "0.4.0"
