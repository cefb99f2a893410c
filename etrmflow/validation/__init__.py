"""Validation machinery shared by the built-in validators."""
