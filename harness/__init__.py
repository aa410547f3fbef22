"""Harnesses beside the tests: what proves the product, never shipped on a Pi."""
