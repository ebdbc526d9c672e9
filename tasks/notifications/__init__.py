"""Telling people through Prefect notification blocks (Slack, webhooks, email)."""
