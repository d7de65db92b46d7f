"""Folder sync against the account's encrypted vault (docs/format.md §14)."""
