"""The runbook's procedures as Prefect flows, one module per runbook area, and what only works
inside a flow run: the approval gate (approval), the recovery lock (lock), running checks within
a deadline (checks).
"""
