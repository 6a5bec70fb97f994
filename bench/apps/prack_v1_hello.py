"""Prack worker for the benchmarks on API v1 through the Python SDK
(prack.worker with api="v1": one JSON request per call, bodies base64).
`--echo` answers with the request body; otherwise "Hello, World!"."""
import argparse
import sys

from prack.worker import Response, serve

HEADERS = [("Content-Type", "text/plain")]
HELLO = Response(200, HEADERS, b"Hello, World!")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    if args.echo:
        def handler(request):
            return Response(200, [("Content-Type", "application/octet-stream")], request.body)
    else:
        def handler(request):
            return HELLO
    return serve(handler, fronts=[args.api], concurrency=args.concurrency, api="v1")


if __name__ == "__main__":
    sys.exit(main())
