"""Test plugin package for ovi."""
