"""``python -m sandbox.app --port PORT``: serve the sandbox app on 127.0.0.1."""

from sandbox.app.server import main

main()
