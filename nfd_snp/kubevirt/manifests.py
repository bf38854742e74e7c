"""The KubeVirt objects nfd-snp ships: SEV-SNP instancetypes, their preference, the sidecar.

One definition serves the committed manifests (`nfd-snp kubevirt instancetypes`, written to
deploy/kubevirt/) and `nfd-snp kubevirt check-vm`, which expands a VM that names one of
them as KubeVirt would. A developer then writes only names:

    spec:
      instancetype: {name: snp.medium}
      preference: {name: snp}

Three families, because KubeVirt grew SEV-SNP in v1.7 (launchSecurity.snp, policy fixed at
0x30000, the kubevirt.io/sev-snp node label from its node labeller) and Plugins in v1.9:

- `snp.*` for KubeVirt >= 1.9 with Plugins (PLUGINS): no launchSecurity in the instancetype
  (1.9 deprecates it there, with an admission warning), the preference `snp` asks with
  `preferredLaunchSecurity: {snp: {}}`, and no sidecar: the Plugin's node and CEL domain
  hooks serve the options (nfd_snp.kubevirt.plugin);
- `snp.*` (KubeVirt >= 1.7): `launchSecurity: {snp: {}}`; the sidecar adds the advanced
  options (annotations) and keeps the firmware KubeVirt chose.
- `snp-on-sev.*` (older KubeVirt): `launchSecurity: {sev: {}}` (so the VM's pod gets
  /dev/sev) plus the request annotation; the sidecar turns the SEV domain into SEV-SNP.

KubeVirt's instancetype API has no firmware field, so the preference `snp` carries what
SNP needs there: EFI without Secure Boot and without persistent variables, and no SMM
(KubeVirt's admission webhook refuses the rest, pkg/virt-api/webhooks/amd64.go).
"""

from __future__ import annotations

import json

from nfd_snp import __version__
from nfd_snp.kubevirt.sidecar import REQUEST_ANNOTATION

# The hook sidecar (KubeVirt pkg/hooks/hooks.go HookSidecar): the shim mounts the ConfigMap's
# key at hookPath and runs it with --version; v1alpha2 is the oldest API with onDefineDomain
# that every KubeVirt still serving hook sidecars accepts (cmd/sidecars/sidecar_shim.go).
SIDECAR_ANNOTATION = "hooks.kubevirt.io/hookSidecars"
SIDECAR_CONFIGMAP = "nfd-snp-sidecar"
SIDECAR_KEY = "onDefineDomain"
SIDECAR_HOOK_PATH = "/usr/bin/onDefineDomain"
SIDECAR_VERSIONS = ("v1alpha1", "v1alpha2", "v1alpha3")
SIDECAR_VERSION = "v1alpha2"

NODE_LABEL = "sev-snp.node.kubevirt.io/enabled"
KUBEVIRT_SNP_LABEL = "kubevirt.io/sev-snp"  # KubeVirt's node labeller (domcaps), v1.7+

INSTANCETYPE_API = "instancetype.kubevirt.io/v1beta1"
INSTANCETYPE_KIND = "VirtualMachineClusterInstancetype"
PREFERENCE_KIND = "VirtualMachineClusterPreference"
PREFERENCE = "snp"

# name suffix, vCPUs, memory
SIZES = (("small", 1, "2Gi"), ("medium", 2, "4Gi"), ("large", 4, "8Gi"), ("xlarge", 8, "16Gi"))
UPSTREAM = "snp"
ON_SEV = "snp-on-sev"
PLUGINS = "plugins"  # KubeVirt 1.9+: named snp.* too, so a VM's names survive the upgrade
FAMILIES = (UPSTREAM, ON_SEV)
NAME_PREFIX = {UPSTREAM: "snp", ON_SEV: "snp-on-sev", PLUGINS: "snp"}

_LABELS = {
    "app.kubernetes.io/name": "nfd-snp",
    "app.kubernetes.io/component": "kubevirt",
    "app.kubernetes.io/version": __version__,
}


def hook_sidecars(configmap: str = SIDECAR_CONFIGMAP) -> str:
    """The hooks.kubevirt.io/hookSidecars value that runs nfd-snp's ConfigMap script."""
    entry = {
        "args": ["--version", SIDECAR_VERSION],
        "configMap": {"name": configmap, "key": SIDECAR_KEY, "hookPath": SIDECAR_HOOK_PATH},
    }
    return json.dumps([entry])


def _metadata(name: str, description: str) -> dict:
    # instancetype.kubevirt.io/description and displayName: the keys common-instancetypes
    # and the KubeVirt UI read.
    return {
        "name": name,
        "labels": dict(_LABELS),
        "annotations": {
            "instancetype.kubevirt.io/description": description,
            "instancetype.kubevirt.io/displayName": description.split(";")[0],
        },
    }


def instancetype(family: str, size: str, configmap: str = SIDECAR_CONFIGMAP) -> dict:
    cpus, memory = {s: (c, m) for s, c, m in SIZES}[size]
    if family == PLUGINS:
        launch = None
        selector = {NODE_LABEL: "true", KUBEVIRT_SNP_LABEL: "true"}
        annotations = None
        how = "KubeVirt 1.9+: SEV-SNP from the preference, options from the nfd-snp Plugin"
    elif family == UPSTREAM:
        launch = {"snp": {}}
        selector = {NODE_LABEL: "true", KUBEVIRT_SNP_LABEL: "true"}
        annotations = {SIDECAR_ANNOTATION: hook_sidecars(configmap)}
        how = "KubeVirt 1.7+ launchSecurity.snp"
    elif family == ON_SEV:
        launch = {"sev": {}}
        selector = {NODE_LABEL: "true"}
        annotations = {SIDECAR_ANNOTATION: hook_sidecars(configmap), REQUEST_ANNOTATION: "true"}
        how = "KubeVirt before 1.7: SEV made SEV-SNP by the nfd-snp sidecar"
    else:
        raise ValueError(f"unknown instancetype family {family!r}")
    gib = memory[:-2]
    spec = {"cpu": {"guest": cpus}, "memory": {"guest": memory}}
    if launch is not None:
        # Before 1.9 the instancetype is the only place that makes the name alone ask for
        # SEV-SNP (preferredLaunchSecurity came with 1.9, which deprecates this field).
        spec["launchSecurity"] = launch
    spec["nodeSelector"] = selector  # preferences have no node selector
    if annotations is not None:
        spec["annotations"] = annotations
    return {
        "apiVersion": INSTANCETYPE_API,
        "kind": INSTANCETYPE_KIND,
        "metadata": _metadata(
            f"{NAME_PREFIX[family]}.{size}",
            f"AMD SEV-SNP {size}: {cpus} vCPU, {gib} GiB; {how}; use with preference {PREFERENCE}",
        ),
        "spec": spec,
    }


def preference(family: str = UPSTREAM) -> dict:
    spec = {
        "firmware": {"preferredEfi": {"secureBoot": False, "persistent": False}},
        "features": {"preferredSmm": {"enabled": False}},
    }
    what = "AMD SEV-SNP guest; EFI without Secure Boot or variable store, no SMM"
    if family == PLUGINS:
        spec["preferredLaunchSecurity"] = {"snp": {}}  # KubeVirt 1.9+
        what = "AMD SEV-SNP guest (launchSecurity.snp); " + what[len("AMD SEV-SNP guest; ") :]
    return {
        "apiVersion": INSTANCETYPE_API,
        "kind": PREFERENCE_KIND,
        "metadata": _metadata(PREFERENCE, what),
        "spec": spec,
    }


def objects(family: str, configmap: str = SIDECAR_CONFIGMAP) -> list:
    """The family's instancetypes, smallest first, then the preference."""
    sizes = [instancetype(family, size, configmap) for size, _c, _m in SIZES]
    return sizes + [preference(family)]


def builtin_definitions(plugins: bool = False) -> dict:
    """{(kind, name): object} for every instancetype and preference nfd-snp ships for a
    KubeVirt with Plugins (1.9+) or without (the sidecar families)."""
    found = {}
    for family in (ON_SEV, PLUGINS) if plugins else FAMILIES:  # the last preference wins
        for obj in objects(family):
            found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


HEADERS = {
    PLUGINS: (
        "SEV-SNP instancetypes for KubeVirt 1.9 and later, and the preference that asks for\n"
        "launchSecurity.snp (preferredLaunchSecurity; 1.9 deprecates launchSecurity in\n"
        "instancetypes). Generated by `nfd-snp kubevirt instancetypes`; do not edit.\n"
        "  spec: {instancetype: {name: snp.medium}, preference: {name: snp}}\n"
        "Needs: the nfd-snp node labels; for the sev-snp.kubevirt.io/* options and node checks,\n"
        "the Plugins feature gate and deploy/kubevirt/plugin.yaml (docs/kubevirt.md)."
    ),
    UPSTREAM: (
        "SEV-SNP instancetypes for KubeVirt 1.7 to 1.9 with hook sidecars (launchSecurity.snp),\n"
        "and the preference they need. Generated by `nfd-snp kubevirt instancetypes --kubevirt\n"
        "1.7`; do not edit.\n"
        "A VM asks for SEV-SNP by name:\n"
        "  spec: {instancetype: {name: snp.medium}, preference: {name: snp}}\n"
        "Needs: the nfd-snp node labels, the sidecar ConfigMap in the VM's namespace, and the\n"
        "Sidecar feature gate (docs/kubevirt.md)."
    ),
    ON_SEV: (
        "SEV-SNP instancetypes for KubeVirt releases before 1.7 (no launchSecurity.snp): SEV\n"
        "launch security that the nfd-snp sidecar turns into SEV-SNP, and the preference they\n"
        "need. Generated by `nfd-snp kubevirt instancetypes --kubevirt 1.6`; do not edit.\n"
        "  spec: {instancetype: {name: snp-on-sev.medium}, preference: {name: snp}}\n"
        "Needs: the nfd-snp node labels, the sidecar ConfigMap in the VM's namespace, and the\n"
        "Sidecar and WorkloadEncryptionSEV feature gates (docs/kubevirt.md)."
    ),
}


def render(family: str, configmap: str = SIDECAR_CONFIGMAP) -> str:
    from nfd_snp import yamlout

    parts = [("", obj) for obj in objects(family, configmap)]
    parts[0] = (HEADERS[family], parts[0][1])
    return yamlout.documents(parts)
