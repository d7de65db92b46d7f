"""Talking to a Lightning node: the funding-source interface and its LND implementation."""
