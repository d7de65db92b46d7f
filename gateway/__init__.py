"""Bitcache payment gateway: releases file chunks against paid L402 tokens.

``app`` composes it; ``http`` is the edge, ``billing`` the money, ``tenants`` the brands,
``persistence`` the database (the only SQL), ``maintenance`` the background loops that are
not billing, and ``admin`` the operator's command. See docs/architecture.md.
"""
