"""Bitcache client: encrypt and upload files, share links, and download them paying per chunk.

The public entry points are :class:`client.api.BitcacheClient` and the ``bitcache`` command
(:func:`client.cli.main`). Everything is encrypted on this machine; the gateway only ever sees
ciphertext, and the file key travels only in the share link's fragment.
"""
