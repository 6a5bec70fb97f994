"""The compiled C core (parser and rings). Import the wrappers instead:
prack.http for parsing, prack.ring for the shared-memory rings."""
from prack._native._prack import ffi, lib  # noqa: F401

__all__ = ["ffi", "lib"]
