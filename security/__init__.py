"""Fleet security material: the broker's TLS certificate authority, node certificates and the center's signing key."""
