"""The database and its stores: the only place in the gateway that holds SQL."""
