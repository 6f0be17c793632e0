"""Helpers for the demo, the tests and the benchmark: local throwaway clusters."""
