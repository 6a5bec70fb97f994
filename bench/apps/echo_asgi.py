"""Echoes the request body (ASGI), for the body-size scenario."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    body = b"".join(chunks) or b"Hello, World!"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
