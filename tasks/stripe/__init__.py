"""Stripe through the official library: the client, its errors, events, and the payment checks."""
