"""Prack: a pull-based HTTP front server.

Clients speak HTTP to the acceptors; app workers pull the queued requests from
the worker API and post the responses back. See docs/architecture.md.
"""
__version__ = "0.1.0"
