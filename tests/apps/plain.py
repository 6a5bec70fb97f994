"""Plain apps for the SDK tests: a WSGI app that counts, one that fails."""
import os
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        environ["wsgi.errors"].write("slow request started\n")
        environ["wsgi.errors"].flush()
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
    if path == "/crash":
        raise RuntimeError("crash")
    body = ("%s %s pid=%d\n" % (environ["REQUEST_METHOD"], path, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def bad_lifespan(scope, receive, send):
    """An ASGI app whose startup fails."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
