"""Helpers for the end-to-end tests: a real S3 store, the real daemon, real log writers."""
