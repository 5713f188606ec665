"""Knock Email Relay."""

__version__ = "0.1.0"
