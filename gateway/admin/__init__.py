"""Operator commands (`bitcache-admin`, `python -m gateway.admin`): edit the tenants file."""
