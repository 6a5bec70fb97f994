"""The documents that describe behaviour stay true to the code."""
import pathlib

import msgspec
import yaml
from openapi_spec_validator import validate

from prack import wire

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def test_openapi_is_valid():
    validate(SPEC)


def _properties(struct) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def test_openapi_schemas_match_the_structs():
    schemas = SPEC["components"]["schemas"]
    for name, struct in [("PulledRequest", wire.PulledRequest),
                         ("PostedResponse", wire.PostedResponse),
                         ("Message", wire.Message), ("Error", wire.Error)]:
        assert set(schemas[name]["properties"]) == _properties(struct), name
        required = {f.encode_name for f in msgspec.structs.fields(struct) if f.required}
        assert set(schemas[name].get("required", [])) == required, name


def test_openapi_lists_every_v1_endpoint():
    assert set(SPEC["paths"]) == {"/api/v1/request", "/api/v1/response"}
    assert set(SPEC["paths"]["/api/v1/request"]) == {"get", "post"}


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
