"""The protocol's shared material outside the server: the conformance vectors (vectors/)."""
