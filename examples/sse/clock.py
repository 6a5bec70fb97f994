"""A server-sent events worker on the Prack SDK: a clock that ticks to every
browser that listens, and stops working for one the moment it goes.

    prack-server &                      # public :8080, worker API :4242
    python examples/sse/clock.py        # then open http://127.0.0.1:8080/

GET /            a page that shows the clock (EventSource)
GET /clock       text/event-stream: one `tick` event per interval
                 (?interval=seconds, default 1; ?count=N stops after N events)
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import urllib.parse

from prack.worker import Response, serve

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>Prack SSE clock</title>
<h1 id="now">waiting for the first tick...</h1>
<script>
  const source = new EventSource("/clock");
  source.addEventListener("tick", e => {
    document.getElementById("now").textContent = JSON.parse(e.data).time;
  });
</script>
"""


def clock(request, interval: float, count: int | None):
    """The event stream: a generator, so each event leaves as it is made.
    Waiting on `request.wait_gone` instead of sleeping ends the stream as
    soon as the client goes (Prack would also stop it at the next event)."""
    yield b"retry: 2000\n\n"
    n = 0
    while count is None or n < count:
        n += 1
        event = {"n": n, "time": time.strftime("%H:%M:%S"), "unix": time.time()}
        yield b"id: %d\nevent: tick\ndata: %s\n\n" % (n, json.dumps(event).encode())
        if (count is None or n < count) and request.wait_gone(interval):
            return


def handler(request):
    path = request.env["PATH_INFO"]
    if path == "/clock":
        query = urllib.parse.parse_qs(request.env["QUERY_STRING"])
        try:
            interval = min(60.0, max(0.0, float(query.get("interval", ["1"])[0])))
            count = int(query["count"][0]) if "count" in query else None
        except ValueError:
            return Response(400, [("Content-Type", "text/plain")], b"bad interval or count\n")
        return Response(200, [("Content-Type", "text/event-stream"),
                              ("Cache-Control", "no-cache")],
                        clock(request, interval, count))
    if path == "/":
        return Response(200, [("Content-Type", "text/html; charset=utf-8")], PAGE)
    return Response(404, [("Content-Type", "text/plain")], b"not found\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", action="append", help="a Prack front's worker API "
                        "(repeatable; default http://127.0.0.1:4242)")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="clock: %(levelname)s: %(message)s")
    return serve(handler, fronts=args.api or ["http://127.0.0.1:4242"],
                 concurrency=args.threads, grace=2.0)


if __name__ == "__main__":
    raise SystemExit(main())
