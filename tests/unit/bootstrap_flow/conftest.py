"""The loopback world (manufacturer, controller CA, owner) of test_flow.py, for every flow test."""

from tests.unit.bootstrap_flow.test_flow import world  # noqa: F401 - a fixture
