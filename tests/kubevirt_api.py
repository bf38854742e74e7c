"""KubeVirt's OpenAPI document as the strict validator the API server applies.

`../shared/fixtures/kubevirt/openapi-swagger.json` is KubeVirt's own document (kubevirt main,
README beside it). KubeVirt's CRDs are structural: the API server rejects unknown fields
under strict field validation (kubectl's default since 1.27) or prunes them. So every object
schema is closed here: one that lists `properties` gets `additionalProperties: false`, and
one that lists none is an empty Go struct (`v1.SEVSNP`, `v1.TDX`, ...) that takes no fields,
except the few apimachinery types that really are free-form.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FREE_FORM = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Patch",
}
# apiVersion group -> the prefix of its definitions in the document.
GROUPS = {"kubevirt.io/v1": "v1", "instancetype.kubevirt.io/v1beta1": "v1beta1"}


def _close(schema) -> None:
    if isinstance(schema, list):
        for item in schema:
            _close(item)
        return
    if not isinstance(schema, dict):
        return
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object and "additionalProperties" not in schema and "$ref" not in schema:
        schema["additionalProperties"] = False
    for key, value in schema.items():
        if key in ("properties", "definitions"):
            for sub in value.values():
                _close(sub)
        elif isinstance(value, (dict, list)):
            _close(value)


class KubeVirtAPI:
    def __init__(self, path: Path) -> None:
        document = json.loads(path.read_text())
        self.definitions = copy.deepcopy(document["definitions"])
        for name, schema in self.definitions.items():
            if name not in FREE_FORM:
                _close(schema)

    def definition(self, obj: dict):
        """The definition name for a KubeVirt object, or None for another API group."""
        prefix = GROUPS.get(obj.get("apiVersion"))
        name = f"{prefix}.{obj.get('kind')}" if prefix else None
        return name if name in self.definitions else None

    def errors(self, obj: dict) -> list:
        """Where the object breaks KubeVirt's schema, one line each (empty: valid)."""
        import jsonschema

        name = self.definition(obj)
        if name is None:
            return [f"no KubeVirt schema for {obj.get('apiVersion')} {obj.get('kind')}"]
        schema = {"$ref": f"#/definitions/{name}", "definitions": self.definitions}
        validator = jsonschema.Draft4Validator(schema)
        found = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(top)"
            found.append(f"{path}: {error.message}")
        return found
