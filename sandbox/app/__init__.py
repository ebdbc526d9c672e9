"""The sandbox app: a small stand-in for the Linkist platform's web app, one router per concern.

- ``health``: ``GET /api/health``, 200 with details when its database answers, 503 otherwise.
- ``payments``: ``POST /api/webhooks/payments``, Stripe webhooks, signature verified, recorded
  once per event id in ``webhook_events`` together with the payment and order state they imply.
- ``hooks``: ``POST /hooks/{channel}`` keeps what is posted, ``GET`` returns it and ``DELETE``
  forgets it: notifications can be read in tests.

Secrets come from the environment (``SANDBOX_APP_DSN``, ``SANDBOX_APP_WEBHOOK_SECRET``), never
argv. Run: ``python -m sandbox.app --port PORT``.
"""
