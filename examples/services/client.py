"""The finite service of the Procfile demo: fetch a page from web, report, exit.

The Procfile starts it only once web accepts connections (``#@ready web=port:...``), so
it needs no retry loop of its own.
"""

from __future__ import annotations

import re
import sys
import urllib.request

url = sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as response:
    body = response.read().decode("utf-8", "replace")
    title = re.search(r"<title>(.*?)</title>", body, re.S)
    print(f"GET {url} -> {response.status}, {len(body)} bytes")
    print(f"page title: {title.group(1).strip() if title else '?'}")
print("done, exiting 0")
