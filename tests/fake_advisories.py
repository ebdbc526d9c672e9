"""A fake vulnerability service on 127.0.0.1, for tests: the registries' audit endpoints are not
reachable from this workplace (its package proxy answers only the package index), so the audit
is pointed here through its settings. It speaks the same interfaces, with canned advisories:

- OSV ``POST /v1/query`` (what ``pip-audit --vulnerability-service osv --osv-url`` asks);
- npm ``POST /-/npm/v1/security/advisories/bulk`` and ``GET /<package>`` (the packument npm
  reads to propose a fixed version), as ``npm audit --registry`` asks.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FIXED_IN_2_20 = [{"introduced": "0"}, {"fixed": "2.20.0"}]
OSV = {
    ("requests", "2.19.0"): {
        "vulns": [
            {
                "id": "GHSA-x84v-xcm2-53pg",
                "aliases": ["CVE-2018-18074"],
                "summary": "Requests sends the Authorization header over HTTP after a redirect",
                "affected": [
                    {
                        "package": {"name": "requests", "ecosystem": "PyPI"},
                        "ranges": [{"type": "ECOSYSTEM", "events": FIXED_IN_2_20}],
                    }
                ],
            }
        ]
    }
}
NPM_ADVISORIES = {
    "lodash": [
        {
            "id": 1065,
            "url": "https://github.com/advisories/GHSA-jf85-cpcp-j695",
            "title": "Prototype Pollution in lodash",
            "severity": "critical",
            "vulnerable_versions": "<4.17.12",
            "cwe": ["CWE-20"],
            "cvss": {"score": 9.1, "vectorString": None},
        },
        {
            "id": 1066,
            "url": "https://github.com/advisories/GHSA-p6mc-m468-83gw",
            "title": "Regular Expression Denial of Service in lodash",
            "severity": "moderate",
            "vulnerable_versions": "<4.17.11",
            "cwe": ["CWE-400"],
            "cvss": {"score": 5.3, "vectorString": None},
        },
    ]
}
NPM_VERSIONS = {"lodash": ["4.17.4", "4.17.21"]}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return

    def _reply(self, payload: Any, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        return json.loads(raw or b"{}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/v1/query":
            query = self._body()
            self._reply(OSV.get((query["package"]["name"], query["version"]), {}))
        elif self.path.startswith("/-/npm/v1/security/advisories/bulk"):
            wanted = self._body()
            self._reply({name: NPM_ADVISORIES[name] for name in wanted if name in NPM_ADVISORIES})
        else:
            self._reply({"error": "not found"}, 404)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        name = self.path.strip("/")
        if name not in NPM_VERSIONS:
            self._reply({"error": "not found"}, 404)
            return
        base = f"http://{self.headers['Host']}"
        self._reply(
            {
                "name": name,
                "dist-tags": {"latest": NPM_VERSIONS[name][-1]},
                "versions": {
                    v: {
                        "name": name,
                        "version": v,
                        "dist": {"tarball": f"{base}/{name}/-/{name}-{v}.tgz"},
                    }
                    for v in NPM_VERSIONS[name]
                },
            }
        )


@contextmanager
def fake_advisories() -> Iterator[str]:
    """Serve on a free port of 127.0.0.1; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
