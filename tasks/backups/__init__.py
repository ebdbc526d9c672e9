"""Backup engines: one contract (``base``), one module per engine."""
