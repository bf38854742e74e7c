"""A test-side evaluation of NodeFeatureRules and NodeFeatureGroups by NFD's documented
matching rules.

Written from NFD's customization guide ("NodeFeatureRule custom resource": matchFeatures
terms are ANDed, each expression of a term must match; `@<feature>.<element>` in
extendedResources takes the element's value; `matchName` matches when the name of at least
one element of the feature set matches, as MatchNamesMulti in NFD's
pkg/apis/nfd/nodefeaturerule/expression.go; InRegexp is an unanchored Go regexp search),
independently of nfd_snp, for the operators the project's rules use. An unknown operator is
an error, not a silent match. A NodeFeatureGroup lists a node when any of its
featureGroupRules matches (nfd-master's nfdAPIUpdateNodeFeatureGroup).
"""

from __future__ import annotations

import re
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
    if op == "InRegexp":
        return any(re.search(v, value) for v in values)
    if op == "NotIn":
        return value not in values
    if op in ("Gt", "Lt"):
        try:
            number, bound = int(value), int(values[0])
        except ValueError:
            return False
        return number > bound if op == "Gt" else number < bound
    raise ValueError(f"operator {op} is not emulated")


def _term_matches(term: dict, features: Features) -> bool:
    if term["feature"] not in features:
        return False  # NFD: "feature not available", the term fails whatever it asks
    elements = features[term["feature"]]
    for key, expr in term.get("matchExpressions", {}).items():
        if not _matches(expr["op"], expr.get("value", []), key in elements, elements.get(key)):
            return False
    name = term.get("matchName")
    if name is not None:
        return any(_matches(name["op"], name.get("value", []), True, k) for k in elements)
    return True


def rule_matches(rule: dict, features: Features) -> bool:
    """A rule's matchFeatures terms, all of which must match (matchAny is not emulated)."""
    if "matchAny" in rule:
        raise ValueError("matchAny is not emulated")
    return all(_term_matches(term, features) for term in rule.get("matchFeatures", []))


def in_group(group: dict, features: Features) -> bool:
    """Whether a NodeFeatureGroup lists a node with `features` in its status."""
    return any(rule_matches(rule, features) for rule in group["spec"]["featureGroupRules"])


def evaluate(rule_spec: dict, features: Features) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(labels, extended resources) one NodeFeatureRule gives a node with `features`."""
    labels: Dict[str, str] = {}
    resources: Dict[str, str] = {}
    for rule in rule_spec["spec"]["rules"]:
        if not rule_matches(rule, features):
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
