"""`nfd-snp fleet`: the SEV readiness of a whole cluster, from what its API server holds.

An admin with forty AMD nodes asks which ones run SEV-SNP guests and what to fix first on
the others, without an ssh session per node and without Prometheus. Two inputs answer it:

- the nodes (`kubectl get nodes -o json`): their labels are what the scheduler sees, so
  readiness comes from `<guest>.node.kubevirt.io/enabled`, and the SNP firmware facts and
  the GPU label from the labels published beside it;
- optionally the NodeFeatures (`kubectl get nodefeatures -A -o json`): nfd-worker copies
  every line of a node's feature file into `spec.features.attributes["local.feature"]`,
  including the `<guest>.node.kubevirt.io/blocked-by.<check>` features that name the root
  causes (nfd_snp.nfd). A NodeFeature belongs to the node its
  `nfd.node.kubernetes.io/node-name` label names, and a node's objects are merged, as
  nfd-master does (getAndMergeNodeFeatures in NFD's pkg/nfd-master/nfd-master.go).

Without NodeFeatures a missing label cannot tell "not ready" from "no nfd-snp on that node";
with them, each guest type of a node that runs nfd-snp has its label or a blocked-by feature,
and a node with neither has no nfd-snp data. Both inputs are untrusted: bounded in size,
checked for shape, every name escaped before it reaches a terminal.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from nfd_snp import nfd
from nfd_snp.checks import Guest, Readiness
from nfd_snp.errors import InputError, printable

# `kubectl get nodes -o json` carries each node's images and conditions: some 10-30 KB a
# node, so this fits several thousand nodes; larger clusters can strip the input first.
MAX_INPUT_BYTES = 128 * 1024 * 1024
SLIM_NODES = (
    "jq '{items: [.items[] | {metadata: {name: .metadata.name, labels: .metadata.labels}}]}'"
)
JSON_SCHEMA = "nfd-snp.fleet/v1"
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"  # NFD's NodeFeatureObjNodeNameLabel
LOCAL_FEATURES = "local.feature"
GPU_LABEL = nfd.SNP_NS + "gpu-passthrough"
FIRMWARE_LABELS = ("api-version", "build-id")
TCB_LABELS = ("fmc", "bootloader", "tee", "snp", "microcode")  # tcb-fmc on Turin only
TCB_SHORT = {"fmc": "fmc", "bootloader": "bl", "tee": "tee", "snp": "snp", "microcode": "ucode"}
NAMESPACES = tuple(nfd.namespace(g) for g in Guest)


class State(enum.Enum):
    READY = "ready"
    NOT_READY = "not_ready"
    UNKNOWN = "unknown"  # the node's nfd-snp could not decide (its undecided checks are named)
    NO_LABEL = "no_label"  # nodes only: not ready here, or no nfd-snp on the node
    NO_DATA = "no_data"  # with NodeFeatures: nothing from nfd-snp for this node


STATE_TEXT = {
    State.READY: "ready",
    State.NOT_READY: "not ready",
    State.UNKNOWN: "unknown",
    State.NO_LABEL: "-",
    State.NO_DATA: "no data",
}


@dataclass(frozen=True)
class GuestState:
    state: State
    blocked_by: Tuple[str, ...] = ()  # checks, sorted; empty when ready or not known


@dataclass(frozen=True)
class NodeRow:
    """One node: per guest type its state and what blocks it, and its SNP labels."""

    name: str
    guests: Dict[Guest, GuestState]
    firmware: Dict[str, str]  # api-version, build-id, tcb-* labels that are present
    gpu_passthrough: Optional[str]


@dataclass(frozen=True)
class Fleet:
    nodes: Tuple[NodeRow, ...]
    with_nodefeatures: bool

    def counts(self) -> Dict[Guest, Counter]:
        """Nodes per guest type and state."""
        return {g: Counter(n.guests[g].state for n in self.nodes) for g in Guest}

    def causes(self) -> List[Tuple[str, Dict[Guest, int]]]:
        """Each check that blocks some node: the nodes it blocks per guest type, ranked by
        the SEV-SNP nodes it blocks, then by all the nodes it blocks, then by name."""
        per: Dict[str, Dict[Guest, int]] = {}
        for node in self.nodes:
            for guest, gs in node.guests.items():
                for check in gs.blocked_by:
                    per.setdefault(check, dict.fromkeys(Guest, 0))[guest] += 1
        nodes_blocked = {
            check: sum(
                1 for n in self.nodes if any(check in g.blocked_by for g in n.guests.values())
            )
            for check in per
        }
        return sorted(
            per.items(), key=lambda kv: (-kv[1][Guest.SEV_SNP], -nodes_blocked[kv[0]], kv[0])
        )


# -- reading the input ---------------------------------------------------------------------


def load_list(data: bytes, source: str, kind: str) -> List[dict]:
    """The objects of a `kubectl get <kind>s -o json` reply (a List), or of one object."""
    if len(data) > MAX_INPUT_BYTES:
        hint = "; keep only names and labels first: " + SLIM_NODES if kind == "Node" else ""
        raise InputError(f"{source}: more than {MAX_INPUT_BYTES // (1024 * 1024)} MiB{hint}")
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{source}: not valid JSON ({str(exc)[:100]})") from None
    if isinstance(doc, dict) and doc.get("kind") == kind:
        items = [doc]
    elif isinstance(doc, dict) and isinstance(doc.get("items"), list):
        items = doc["items"]
    else:
        raise InputError(f"{source}: not a list of {kind}s (kubectl get {kind.lower()}s -o json)")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(f"{source}: items[{i}] is not an object")
        if item.get("kind", kind) != kind:
            raise InputError(f"{source}: items[{i}] is a {_short(item.get('kind'))}, not a {kind}")
    return items


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value, where: str, source: str) -> dict:
    """An object of the input; absent or null is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{source}: {where} is not an object")
    return value


def _strings(value, where: str, source: str) -> Dict[str, str]:
    """A map of strings (labels, feature elements); absent or null is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InputError(f"{source}: {where} is not a map of strings")
    return value


def _name(item: dict, i: int, source: str) -> str:
    meta = item.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise InputError(f"{source}: items[{i}].metadata.name is missing")
    return name


def node_labels(items: List[dict], source: str) -> Dict[str, Dict[str, str]]:
    """{node name: labels}, in the input's order."""
    out: Dict[str, Dict[str, str]] = {}
    for i, item in enumerate(items):
        name = _name(item, i, source)
        if name in out:
            raise InputError(f"{source}: node {_short(name)} appears twice")
        out[name] = _strings(item["metadata"].get("labels"), f"items[{i}].metadata.labels", source)
    return out


def local_features(items: List[dict], source: str) -> Dict[str, Dict[str, str]]:
    """{node name: its local.feature elements}, merged over the node's NodeFeatures. Objects
    without the node-name label are skipped, as nfd-master skips them."""
    out: Dict[str, Dict[str, str]] = {}
    for i, item in enumerate(items):
        _name(item, i, source)
        labels = _strings(item["metadata"].get("labels"), f"items[{i}].metadata.labels", source)
        node = labels.get(NODE_NAME_LABEL)
        if not node:
            continue
        at = f"items[{i}].spec"
        spec = _object(item.get("spec"), at, source)
        features = _object(spec.get("features"), at + ".features", source)
        attributes = _object(features.get("attributes"), at + ".features.attributes", source)
        at += f'.features.attributes["{LOCAL_FEATURES}"]'
        local = _object(attributes.get(LOCAL_FEATURES), at, source)
        out.setdefault(node, {}).update(_strings(local.get("elements"), at + ".elements", source))
    return out


# -- judging each node ---------------------------------------------------------------------


def _guest_state(guest: Guest, labels: Dict[str, str], features: Optional[Dict[str, str]]):
    if labels.get(nfd.ENABLED[guest]) == "true":
        return GuestState(State.READY)
    if features is None:
        return GuestState(State.NO_LABEL)
    prefix = nfd.namespace(guest) + nfd.BLOCKED_BY
    blocked = {k[len(prefix) :]: v for k, v in features.items() if k.startswith(prefix)}
    if blocked:
        failed = sorted(c for c, v in blocked.items() if v == nfd.BLOCKED_VALUES[Readiness.NO])
        if failed:
            return GuestState(State.NOT_READY, tuple(failed))
        return GuestState(State.UNKNOWN, tuple(sorted(blocked)))
    if any(k.startswith(NAMESPACES) for k in features):
        return GuestState(State.NOT_READY)  # an nfd-snp that does not name causes
    return GuestState(State.NO_DATA)


def judge(nodes: Dict[str, Dict[str, str]], features: Optional[Dict[str, Dict[str, str]]]) -> Fleet:
    rows = []
    for name, labels in nodes.items():
        own = None if features is None else features.get(name, {})
        firmware = {k: labels[nfd.SNP_NS + k] for k in FIRMWARE_LABELS if nfd.SNP_NS + k in labels}
        for part in TCB_LABELS:
            key = f"{nfd.SNP_NS}tcb-{part}"
            if key in labels:
                firmware[f"tcb-{part}"] = labels[key]
        rows.append(
            NodeRow(
                name,
                {g: _guest_state(g, labels, own) for g in Guest},
                firmware,
                labels.get(GPU_LABEL),
            )
        )
    return Fleet(tuple(rows), features is not None)


def read(nodes_data: bytes, nodes_source: str, features_data=None, features_source="") -> Fleet:
    nodes = node_labels(load_list(nodes_data, nodes_source, "Node"), nodes_source)
    features = None
    if features_data is not None:
        items = load_list(features_data, features_source, "NodeFeature")
        features = local_features(items, features_source)
    return judge(nodes, features)


# -- views ---------------------------------------------------------------------------------


def as_json(fleet: Fleet) -> dict:
    from nfd_snp import __version__

    counts = fleet.counts()
    return {
        "schema": JSON_SCHEMA,
        "version": __version__,
        "nodefeatures": fleet.with_nodefeatures,
        "nodes": [
            {
                "name": n.name,
                **{
                    g.value: {"state": gs.state.value, "blocked_by": list(gs.blocked_by)}
                    for g, gs in n.guests.items()
                },
                "firmware": n.firmware,
                "gpu_passthrough": n.gpu_passthrough,
            }
            for n in fleet.nodes
        ],
        "counts": {g.value: {s.value: counts[g][s] for s in _states(fleet)} for g in Guest},
        "causes": [
            {"check": check, "nodes": {g.value: n for g, n in per.items()}}
            for check, per in fleet.causes()
        ],
    }


def render_json(fleet: Fleet) -> str:
    return json.dumps(as_json(fleet), indent=2) + "\n"


def _states(fleet: Fleet) -> Tuple[State, ...]:
    last = State.NO_DATA if fleet.with_nodefeatures else State.NO_LABEL
    return (State.READY, State.NOT_READY, State.UNKNOWN, last)


def _tcb(firmware: Dict[str, str]) -> str:
    parts = [f"{TCB_SHORT[p]}={firmware['tcb-' + p]}" for p in TCB_LABELS if "tcb-" + p in firmware]
    return " ".join(parts) or "-"


def _blocked_text(node: NodeRow) -> str:
    """Guest types grouped by the checks that block them: `sev-es, sev-snp: cpu.vendor`."""
    groups: Dict[Tuple[State, Tuple[str, ...]], List[str]] = {}
    for guest, gs in node.guests.items():
        if gs.blocked_by:
            groups.setdefault((gs.state, gs.blocked_by), []).append(guest.value)
    parts = []
    for (state, checks), guests in groups.items():
        undecided = " undecided" if state is State.UNKNOWN else ""
        parts.append(f"{', '.join(guests)}{undecided}: {', '.join(checks)}")
    return "; ".join(parts)


def _table(rows: List[List[str]]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        yield "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()


def render_text(fleet: Fleet) -> str:
    from nfd_snp.checks import all_checks

    lines: List[str] = []
    if not fleet.nodes:
        return "no nodes\n"
    rows = [["NODE", *(g.label for g in Guest), "SNP API", "BUILD", "REPORTED TCB", "GPU"]]
    rows[0].append("BLOCKED BY" if fleet.with_nodefeatures else "")
    for n in fleet.nodes:
        rows.append(
            [
                printable(n.name),
                *(STATE_TEXT[n.guests[g].state] for g in Guest),
                printable(n.firmware.get("api-version", "-")),
                printable(n.firmware.get("build-id", "-")),
                printable(_tcb(n.firmware)),
                printable(n.gpu_passthrough or "-"),
                printable(_blocked_text(n)),
            ]
        )
    lines += _table(rows)
    counts = fleet.counts()
    states = _states(fleet)
    lines += ["", f"{len(fleet.nodes)} nodes"]
    lines += _table(
        [["", *(STATE_TEXT[s] if s is not State.NO_LABEL else "no label" for s in states)]]
        + [[g.label, *(str(counts[g][s]) for s in states)] for g in Guest]
    )
    if not fleet.with_nodefeatures:
        lines += [
            "no label: not ready, or no nfd-snp on the node; with --nodefeatures (kubectl get "
            "nodefeatures -A -o json) the root cause of each node that is not ready"
        ]
    causes = fleet.causes()
    if causes:
        titles = {c.name: c.title for c in all_checks()}
        lines += ["", "Root causes, by nodes blocked (nfd-snp check on a node: detail and fix)"]
        lines += _table(
            [["CHECK", *(g.label for g in Guest), "WHAT"]]
            + [
                [printable(check), *(str(per[g]) for g in Guest), titles.get(check, "")]
                for check, per in causes
            ]
        )
    return "\n".join(lines) + "\n"
