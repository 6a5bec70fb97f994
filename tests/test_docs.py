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
