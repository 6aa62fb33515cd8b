"""Fixtures of the training tests."""
