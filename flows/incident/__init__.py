"""Incident response (RUNBOOK.md "Incident Response"): the incident-response flow, one run per
incident, and the incident-watchdog that continues an incident whose run died."""
