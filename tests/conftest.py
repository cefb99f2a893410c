"""Shared test setup: our own test kit, loaded the way users load it."""

pytest_plugins = ["etrmflow.testing"]
