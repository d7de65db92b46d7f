"""A private Bitcoin regtest network (btcd, two LND nodes) and a kubo node on loopback."""
