"""Opens a page in headless Chromium and prints its visible text once it contains WANT (or
after TIMEOUT seconds), driving Chromium over the DevTools protocol.

usage: page_text.py URL WANT TIMEOUT_SECONDS
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from websockets.sync.client import connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
]


def main() -> None:
    url, want, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    profile = tempfile.mkdtemp(prefix="plinth-chromium-")
    browser = subprocess.Popen(
        ["chromium", *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) and time.time() < deadline:
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{url}", method="PUT")
        target = json.load(urllib.request.urlopen(request))
        text = ""
        with connect(target["webSocketDebuggerUrl"], max_size=None) as page:
            deadline = time.time() + timeout
            ident = 0
            while time.time() < deadline:
                ident += 1
                page.send(json.dumps({
                    "id": ident,
                    "method": "Runtime.evaluate",
                    "params": {"expression": "document.body ? document.body.innerText : ''"},
                }))
                while True:
                    answer = json.loads(page.recv())
                    if answer.get("id") == ident:
                        break
                text = answer.get("result", {}).get("result", {}).get("value", "") or ""
                if want in text:
                    break
                time.sleep(0.5)
        print(text)
    finally:
        browser.kill()
        browser.wait()


if __name__ == "__main__":
    main()
