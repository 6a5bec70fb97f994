"""A small Flask application: routes, JSON, forms, uploads, cookies,
redirects, errors."""
import hashlib

from flask import Flask, abort, jsonify, make_response, redirect, request, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "hello from flask\n"


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, q=request.args.get("q"), path=request.path)


@app.post("/echo-json")
def echo_json():
    data = request.get_json()
    return jsonify(received=data, type=request.content_type), 201


@app.post("/form")
def form():
    return jsonify(fields=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(name=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   note=request.form.get("note"))


@app.get("/cookies/set")
def set_cookie():
    resp = make_response("set\n")
    resp.set_cookie("a", "1")
    resp.set_cookie("b", "two", httponly=True)
    return resp


@app.get("/cookies")
def cookies():
    return jsonify(dict(request.cookies))


@app.get("/go")
def go():
    return redirect(url_for("item", item_id=7, q="x"))


@app.get("/boom")
def boom():
    raise RuntimeError("boom")


@app.get("/forbidden")
def forbidden():
    abort(403)


@app.route("/method", methods=["GET", "PUT", "DELETE", "PATCH"])
def method():
    return jsonify(method=request.method, length=len(request.get_data()))


@app.get("/path/<path:rest>")
def path(rest):
    return jsonify(rest=rest, script_root=request.script_root)


@app.get("/headers")
def headers():
    return jsonify(ua=request.headers.get("User-Agent"), x=request.headers.get("X-Custom"))


@app.get("/empty")
def empty():
    return "", 204


@app.get("/stream")
def stream():
    def gen():
        for i in range(5):
            yield "line %d\n" % i
    return app.response_class(gen(), mimetype="text/plain")
