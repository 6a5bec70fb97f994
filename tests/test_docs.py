"""The documents that describe behaviour stay true to the code."""
import pathlib

import msgspec
import yaml
from openapi_spec_validator import validate

from prack.api import streams as apistream

from prack.protocol import messages
ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def test_openapi_is_valid():
    validate(SPEC)


def _properties(struct) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def test_openapi_schemas_match_the_structs():
    schemas = SPEC["components"]["schemas"]
    for name, struct in [("PulledRequest", messages.PulledRequest),
                         ("PostedResponse", messages.PostedResponse),
                         ("Message", messages.Message), ("Error", messages.Error),
                         ("RequestItem", messages.RequestItem), ("RequestBatch", messages.RequestBatch),
                         ("ResponseItem", messages.ResponseItem),
                         ("ResponseBatch", messages.ResponseBatch),
                         ("ItemResult", messages.ItemResult), ("ResultBatch", messages.ResultBatch),
                         ("StreamHead", apistream.StreamHead),
                         ("StreamEnd", apistream.StreamEnd),
                         ("StreamState", apistream.StreamState)]:
        assert set(schemas[name]["properties"]) == _properties(struct), name
        required = {f.encode_name for f in msgspec.structs.fields(struct) if f.required}
        assert set(schemas[name].get("required", [])) == required, name


def test_openapi_lists_every_endpoint():
    assert set(SPEC["paths"]) == {"/api/v1/request", "/api/v1/response", "/api/v2/requests",
                                  "/api/v2/responses", "/api/v2/requests/{id}/error",
                                  "/api/v2/requests/{id}/head", "/api/v2/requests/{id}/body",
                                  "/api/v2/requests/{id}/end", "/api/v2/requests/{id}/state",
                                  "/api/v2/requests/{id}/input",
                                  "/api/v2/requests/{id}/events", "/api/v2/requests/{id}/send"}
    assert set(SPEC["paths"]["/api/v2/requests/{id}/input"]) == {"get"}
    assert set(SPEC["paths"]["/api/v2/requests/{id}/events"]) == {"get"}
    assert set(SPEC["paths"]["/api/v2/requests/{id}/send"]) == {"post"}
    assert set(SPEC["paths"]["/api/v1/request"]) == {"get", "post"}
    assert set(SPEC["paths"]["/api/v2/requests"]) == {"get"}


def test_openapi_v2_parameters_match_the_server():
    from prack.api import checks, pulls
    params = {p["name"]: p for p in SPEC["paths"]["/api/v2/requests"]["get"]["parameters"]}
    assert set(params) == {"max", "wait"}
    assert "%d" % pulls.MAX_BATCH in params["max"]["description"]
    results = SPEC["components"]["schemas"]["ItemResult"]["properties"]["status"]["enum"]
    assert set(results) == {checks.OK, checks.GONE, checks.UNKNOWN, checks.INVALID}


def test_openapi_websocket_shapes_match_the_server():
    from prack.api import websockets as apiws
    params = {p["name"]: p for p in
              SPEC["paths"]["/api/v2/requests/{id}/events"]["get"]["parameters"]}
    assert set(params) == {"id", "max", "wait"}
    assert "%d" % apiws.MAX_EVENTS in params["max"]["description"]
    schemas = SPEC["components"]["schemas"]
    assert set(schemas["WebSocketEvent"]["properties"]) == set(apiws.WsEvent.__struct_fields__)
    assert set(schemas["WebSocketMessage"]["properties"]) == \
        set(apiws.WsOutMessage.__struct_fields__)
    assert set(schemas["WebSocketEvent"]["properties"]["type"]["enum"]) == \
        {"text", "binary", "close"}


def test_v2_items_encode_as_documented():
    """A RequestItem in msgpack carries its body raw; in JSON, base64."""
    item = messages.RequestItem("0" * 32, {"REQUEST_METHOD": "GET"}, b"\x00\xff", 1.5)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(item))["body"] == b"\x00\xff"
    assert msgspec.json.decode(msgspec.json.encode(item))["body"] == "AP8="


def test_readme_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    for doc in ["architecture.md", "worker-api.md", "openapi.yaml", "configuration.md",
                "operations.md", "parser.md", "ring.md"]:
        assert (ROOT / "docs" / doc).exists(), doc
        assert "docs/" + doc in readme, doc


def test_architecture_explains_selectors_choice():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert "selectors2" in text and "DefaultSelector" in text


def _tree_in_architecture() -> set[str]:
    """The paths named by the tree that opens docs/architecture.md: its first
    fenced block, one entry per line, two spaces of indent per level, folders
    ending in "/"."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```", 2)[1]
    paths, stack = set(), []
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0]
        depth = indent // 2
        del stack[depth:]
        path = "".join(stack) + name
        if name.endswith("/"):
            stack.append(name)
        else:
            paths.add(path)
    return paths


def test_architecture_names_every_module():
    """Every module of the package (Python and C) is named in the tree that
    opens docs/architecture.md, and the tree names nothing that is gone."""
    src = ROOT / "src"
    modules = {str(p.relative_to(src)) for p in src.rglob("*")
               if p.suffix in (".py", ".c", ".h") and p.name != "__init__.py"
               and "__pycache__" not in p.parts and not p.name.startswith("_prack")}
    named = _tree_in_architecture()
    assert sorted(modules - named) == [], "modules missing from docs/architecture.md"
    assert sorted(named - modules) == [], "docs/architecture.md names modules that do not exist"
