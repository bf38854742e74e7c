"""A test-side evaluation of NodeFeatureRules by NFD's documented matching rules.

Written from NFD's customization guide ("NodeFeatureRule custom resource": matchFeatures
terms are ANDed, each expression of a term must match; `@<feature>.<element>` in
extendedResources takes the element's value), independently of nfd_snp, for the operators
the project's rules use. An unknown operator is an error, not a silent match.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

Features = Dict[str, Dict[str, str]]  # feature set ("local.label") -> element -> value


def _matches(op: str, values, present: bool, value: Optional[str]) -> bool:
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if not present:
        return False
    if op == "IsTrue":
        return value == "true"
    if op == "IsFalse":
        return value == "false"
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op in ("Gt", "Lt"):
        try:
            number, bound = int(value), int(values[0])
        except ValueError:
            return False
        return number > bound if op == "Gt" else number < bound
    raise ValueError(f"operator {op} is not emulated")


def evaluate(rule_spec: dict, features: Features) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(labels, extended resources) one NodeFeatureRule gives a node with `features`."""
    labels: Dict[str, str] = {}
    resources: Dict[str, str] = {}
    for rule in rule_spec["spec"]["rules"]:
        ok = True
        for term in rule.get("matchFeatures", []):
            elements = features.get(term["feature"], {})
            for key, expr in term["matchExpressions"].items():
                if not _matches(
                    expr["op"], expr.get("value", []), key in elements, elements.get(key)
                ):
                    ok = False
        if not ok:
            continue
        labels.update(rule.get("labels", {}))
        for name, value in rule.get("extendedResources", {}).items():
            if value.startswith("@"):
                feature_set, element = _split_reference(value[1:])
                found = features.get(feature_set, {}).get(element)
                if found is None:
                    continue  # NFD skips a resource whose feature is missing
                value = found
            resources[name] = value
    return labels, resources


def _split_reference(ref: str) -> Tuple[str, str]:
    """ "local.feature.sev-snp.node.kubevirt.io/asids" -> ("local.feature", "sev-snp...")."""
    source, feature, element = ref.split(".", 2)
    return f"{source}.{feature}", element
