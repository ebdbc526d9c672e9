"""The platform's HTTP endpoints through httpx: health probes."""
