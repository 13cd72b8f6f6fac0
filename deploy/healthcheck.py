#!/usr/bin/env python3
"""Container HEALTHCHECK: exit 0 if the worker's /healthz answers 200, else 1.

Standard library only (the slim image has no curl). Path and port follow the worker's
settings: FEEDWARDEN_WEB_PORT (default 6066); FEEDWARDEN_HEALTHCHECK_PATH may point it at
/readyz instead.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("FEEDWARDEN_WEB_PORT", "6066").strip() or "6066"
    path = os.environ.get("FEEDWARDEN_HEALTHCHECK_PATH", "/healthz")
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed loopback URL
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"{url}: HTTP {response.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
