"""Benchmarks that print ratios against the bare tools (see each module)."""
