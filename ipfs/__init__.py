"""Reaching IPFS: the block-store interface the gateway uses, with kubo's RPC API behind it."""
