"""HTTP plumbing shared by the REST adapters (LND, kubo): nothing Bitcache-specific."""
