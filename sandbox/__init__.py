"""The local sandbox: a regtest network, a gateway on it, and a client config that pays with it.

On top of everything (beside regtest/): it imports the gateway, the client and regtest.
"""
