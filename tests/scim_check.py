#!/usr/bin/env python3
"""Run the scim2-tester compliance checks against a SCIM 2.0 server.

Requires (PyPI):
    pip install "scim2-tester[httpx2]==0.5.2" "scim2-client[httpx2]==0.13.2" "scim2-models==0.12.3"

Usage:
    python3 tests/scim_check.py BASE_URL TOKEN CA_CERT_FILE [options]
    e.g. python3 tests/scim_check.py https://127.0.0.1:8443/scim/v2 s3cret /tmp/ca.pem

The resource models are NOT given to the client: check_server() reads
/ServiceProviderConfig, /ResourceTypes and /Schemas and builds the models
from what the server publishes.

Exit status: 0 if no check has status ERROR/CRITICAL, 1 otherwise,
2 on usage / connection setup errors.
"""

import argparse
import json
import ssl
import sys
import warnings

PASS_STATUSES = {"SUCCESS", "COMPLIANT", "ACCEPTABLE", "DEVIATION"}
FAIL_STATUSES = {"ERROR", "CRITICAL"}


def _one_line(text):
    if text is None:
        return ""
    return " ".join(str(text).split())


def _data_repr(data, limit):
    try:
        if hasattr(data, "model_dump"):
            data = data.model_dump(mode="json", exclude_none=True)
        out = json.dumps(data, default=str)
    except Exception:
        out = repr(data)
    return out if len(out) <= limit else out[:limit] + "...(truncated)"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Run scim2-tester (check_server) against a SCIM 2.0 server.",
    )
    p.add_argument("base_url", help="SCIM base URL, e.g. https://127.0.0.1:8443/scim/v2")
    p.add_argument("token", help="bearer token sent as 'Authorization: Bearer <token>'")
    p.add_argument("cafile", help="PEM CA certificate file used to verify the server TLS certificate")
    p.add_argument(
        "--resource-types",
        default="User,Group",
        help="comma-separated resource type names to test (default: User,Group)",
    )
    p.add_argument("--include-tags", default="", help="comma-separated tags to run only (e.g. discovery,crud)")
    p.add_argument("--exclude-tags", default="", help="comma-separated tags to skip (e.g. patch:remove)")
    p.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds (default 30)")
    p.add_argument(
        "--scim-media-type",
        action="store_true",
        help="send 'Accept/Content-Type: application/scim+json' (by default the tester "
        "sends 'Accept: */*' and JSON bodies as 'Content-Type: application/json')",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print debug data of failed checks")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        from httpx2 import Client
        from scim2_client.engines.httpx2 import SyncSCIMClient
        from scim2_tester import Status, check_server
    except ImportError as exc:
        print(
            f"import error: {exc}\n"
            'install: pip install "scim2-tester[httpx2]==0.5.2" '
            '"scim2-client[httpx2]==0.13.2" "scim2-models==0.12.3"',
            file=sys.stderr,
        )
        return 2

    try:
        ssl_ctx = ssl.create_default_context(cafile=args.cafile)
    except (OSError, ssl.SSLError) as exc:
        print(f"cannot load CA file {args.cafile!r}: {exc}", file=sys.stderr)
        return 2

    base_url = args.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"}
    if args.scim_media_type:
        headers["Accept"] = "application/scim+json"
        headers["Content-Type"] = "application/scim+json"
    http = Client(
        base_url=base_url,
        headers=headers,
        verify=ssl_ctx,
        timeout=args.timeout,
        trust_env=False,  # ignore HTTP(S)_PROXY etc. for a local server
    )
    # Preflight, only to print a readable transport/TLS error (the checks
    # themselves report a bare "Network error happened during request").
    try:
        pre = http.get("ServiceProviderConfig")
        if pre.status_code != 200:
            print(f"warning: GET {base_url}/ServiceProviderConfig -> HTTP {pre.status_code}",
                  file=sys.stderr)
    except Exception as exc:  # httpx2 transport / TLS errors
        print(f"warning: cannot reach {base_url}: {type(exc).__name__}: {exc}", file=sys.stderr)

    # No provider / resource models: check_server discovers them from the
    # server's ServiceProviderConfig, ResourceTypes and Schemas endpoints.
    scim = SyncSCIMClient(http)

    split = lambda s: {t.strip() for t in s.split(",") if t.strip()} or None  # noqa: E731
    resource_types = sorted(split(args.resource_types) or []) or None

    try:
        results = check_server(
            scim,
            raise_exceptions=False,
            include_tags=split(args.include_tags),
            exclude_tags=split(args.exclude_tags),
            resource_types=resource_types,
        )
    finally:
        http.close()

    passed = failed = skipped = 0
    for r in results:
        status = r.status.name
        if status in FAIL_STATUSES:
            failed += 1
        elif status == Status.SKIPPED.name:
            skipped += 1
        else:
            passed += 1
        prefix = f"[{r.resource_type}] " if r.resource_type else ""
        print(f"{status:8} {prefix}{r.title or '?'}: {_one_line(r.reason)}")
        if args.verbose and status in FAIL_STATUSES and r.data is not None:
            print(f"         data: {_data_repr(r.data, 2000)}")

    # check_server stops after discovery when the service cannot be described
    titles = {r.title for r in results}
    if "random_url" not in titles and not args.include_tags:
        print("ERROR    discovery: could not build resource models from "
              "/ServiceProviderConfig, /ResourceTypes and /Schemas; resource checks not run")
        failed += 1

    print(f"scim2-tester: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
