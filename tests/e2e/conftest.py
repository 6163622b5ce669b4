"""Fixtures of the end-to-end tests beyond the shared ones (tests/conftest.py)."""

from .nbdlab import nbd_lab, tls_lab  # noqa: F401  (fixtures: the HTTPS lab for NBD)
