"""Packaged JSON Schemas of the YAML documents."""
