"""Plain, retryable code grouped by the system it touches; needs no running flow and imports no
flow.
"""
