"""A small Starlette application with a lifespan: routes, JSON, forms,
uploads, cookies, redirects, errors, streaming."""
import contextlib
import hashlib

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import (JSONResponse, PlainTextResponse, RedirectResponse, Response,
                                 StreamingResponse)
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"started": "yes"}


async def index(request):
    return PlainTextResponse("hello from starlette\n")


async def item(request):
    return JSONResponse({"id": request.path_params["item_id"], "q": request.query_params.get("q"),
                         "path": request.url.path})


async def echo_json(request):
    return JSONResponse({"received": await request.json(),
                         "type": request.headers.get("content-type")}, status_code=201)


async def form(request):
    data = await request.form()
    return JSONResponse({"fields": {k: data.getlist(k) for k in data.keys()}})


async def upload(request):
    async with request.form() as data:      # closes the spooled upload
        f = data["file"]
        content = await f.read()
        return JSONResponse({"name": f.filename, "size": len(content),
                             "sha256": hashlib.sha256(content).hexdigest(),
                             "note": data.get("note")})


async def set_cookie(request):
    resp = PlainTextResponse("set\n")
    resp.set_cookie("a", "1")
    resp.set_cookie("b", "two", httponly=True)
    return resp


async def cookies(request):
    return JSONResponse(dict(request.cookies))


async def go(request):
    return RedirectResponse("/items/7?q=x", status_code=302)


async def boom(request):
    raise RuntimeError("boom")


async def forbidden(request):
    raise HTTPException(403)


async def method(request):
    return JSONResponse({"method": request.method, "length": len(await request.body())})


async def state(request):
    return JSONResponse({"started": request.state.started})


async def stream(request):
    async def gen():
        for i in range(5):
            yield "line %d\n" % i
    return StreamingResponse(gen(), media_type="text/plain")


async def empty(request):
    return Response(status_code=204)


app = Starlette(lifespan=lifespan, routes=[
    Route("/", index),
    Route("/items/{item_id:int}", item),
    Route("/echo-json", echo_json, methods=["POST"]),
    Route("/form", form, methods=["POST"]),
    Route("/upload", upload, methods=["POST"]),
    Route("/cookies/set", set_cookie),
    Route("/cookies", cookies),
    Route("/go", go),
    Route("/boom", boom),
    Route("/forbidden", forbidden),
    Route("/method", method, methods=["GET", "PUT", "DELETE", "PATCH"]),
    Route("/state", state),
    Route("/stream", stream),
    Route("/empty", empty),
])
