"""The EST tests' shared fixture: ``pki`` (a controller CA, a manufacturer CA, TLS files), from test_est."""

from tests.unit.est.test_est import pki  # noqa: F401 - a fixture, offered to every module here
