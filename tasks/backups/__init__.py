"""Backups: the engine contract and its pgBackRest engine, recovery planning over it, and how fresh
the last backup and verification are.
"""
