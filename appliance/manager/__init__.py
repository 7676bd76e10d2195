"""The FSC Manager: contracts, signatures, access tokens, peers and services."""
