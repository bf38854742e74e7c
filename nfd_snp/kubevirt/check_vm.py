"""`nfd-snp kubevirt check-vm`: a VM or VMI manifest's SEV-SNP request, checked offline.

In the cluster, a mistake in an SNP VM surfaces late: KubeVirt's admission webhook refuses
some, the sidecar refuses others at define time (the VMI then shows only "exit status 1",
the reason is in the hook-sidecar-0 container's log), and some are silent (option
annotations on a VM without the sidecar are ignored; an SEV VM without the sidecar starts
as plain SEV). This module finds them before `kubectl apply`:

1. a VirtualMachine is expanded into the VMI KubeVirt would create, applying the
   instancetype and preference it names (nfd-snp's own are built in; others are read from
   the input) as KubeVirt's pkg/instancetype/apply does, conflicts included;
2. the VMI is checked against the launchSecurity rules of KubeVirt's admission webhook
   (pkg/virt-api/webhooks/amd64.go, ValidateLaunchSecurityAmd64);
3. the VMI's SNP request is read by `nfd_snp.kubevirt.snp_request` and a domain shaped like
   KubeVirt's is rewritten by `nfd_snp.kubevirt.on_define_domain`: the code the sidecar runs;
4. the hook-sidecar annotation and the node selector are checked, since without them the
   request is not served or lands on a node that cannot run SNP.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from nfd_snp.errors import DomainError, InputError, excerpt, printable
from nfd_snp.kubevirt import manifests as km
from nfd_snp.kubevirt import sidecar as kubevirt

MAX_INPUT_BYTES = 16 * 1024 * 1024
# A VirtualMachine is about ten levels deep (spec.template.spec.domain.devices.disks[].disk);
# deeper input is refused before anything walks it (copy, JSON, the sidecar's code).
MAX_DEPTH = 64
NAME_SHOWN = 100  # characters of a name from the input echoed in a verdict (errors.excerpt)
VM_KINDS = ("VirtualMachine", "VirtualMachineInstance")
DEFINITION_KINDS = (
    "VirtualMachineClusterInstancetype",
    "VirtualMachineInstancetype",
    "VirtualMachineClusterPreference",
    "VirtualMachinePreference",
)
# The request's three forms (DESIGN.md, "Asking for SNP").
UPSTREAM = kubevirt.UPSTREAM


@dataclass
class Result:
    """What check-vm says about one VM or VMI."""

    kind: str
    name: str
    request: Optional[str] = None  # which form asked for SEV-SNP; None: it did not ask
    uses: List[str] = field(default_factory=list)  # "instancetype snp.medium", ...
    options: List[str] = field(default_factory=list)  # "hostData", "policy=0x00030000"
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    unchecked: Optional[str] = None  # why the input does not allow a check
    path: Optional[str] = None  # what serves its SEV-SNP request (PATHS)
    node_hook: Optional[str] = None  # what the Plugin's node hook answers on --node

    @property
    def served(self) -> bool:
        refused = (self.node_hook or "").startswith("refuses")
        return (
            self.request is not None and not self.errors and self.unchecked is None and not refused
        )


# -- reading the input ---------------------------------------------------------------------


def load_documents(data: bytes, source: str) -> list:
    """The objects in a JSON or YAML file (several documents, `kind: List` flattened)."""
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{source}: more than {MAX_INPUT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            docs = [json.loads(text)]
        except (ValueError, RecursionError, OverflowError) as exc:
            raise InputError(f"{source}: not valid JSON ({excerpt(exc, 100)})") from None
    else:
        docs = _load_yaml(text, source)
    objects = []
    for doc in docs:
        if isinstance(doc, list):
            objects += doc
        elif doc is not None:
            objects.append(doc)
    flat = []
    for obj in objects:
        if not isinstance(obj, dict):
            raise InputError(f"{source}: a document is not a Kubernetes object")
        kind = obj.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
            flat += [item for item in obj["items"] if isinstance(item, dict)]
        else:
            flat.append(obj)
    return flat


def _load_yaml(text: str, source: str) -> list:
    try:
        import yaml
    except ImportError:
        raise InputError(
            f"{source}: reading YAML needs PyYAML (python3-pyyaml); or pass JSON, e.g. "
            "`kubectl create --dry-run=client -o json -f FILE | nfd-snp kubevirt check-vm -`"
        ) from None
    try:
        return list(yaml.load_all(text, Loader=_loader(yaml)))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InputError(f"{source}: not valid YAML{line} ({excerpt(problem, 100)})") from None
    except RecursionError:
        raise InputError(f"{source}: YAML nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:  # a 5,000-digit int, a bad date
        raise InputError(f"{source}: not valid YAML ({excerpt(exc, 100)})") from None


_LOADERS: dict = {}


def _loader(yaml):
    """A safe YAML loader that refuses aliases: libyaml's (CSafeLoader) where PyYAML has it,
    ten times faster than the pure-Python one on large input.

    An alias makes a node appear again wherever it is named, so nine levels of nine aliases
    are 387 million nodes from 573 bytes, which any walk of the result (copying it, writing
    it as JSON) expands. Kubernetes never writes aliases (`kubectl get -o yaml` has none),
    so refusing them all is simpler and safer than bounding their expansion: the second
    time the constructor is asked for one node, the input used an alias (or a merge key).
    """
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = _LOADERS.get(base)
    if loader is None:

        class NoAliasLoader(base):
            def construct_object(self, node, deep=False):
                if node in self.constructed_objects or node in self.recursive_objects:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        "aliases (*name) and merge keys (<<) are not accepted: write the "
                        "manifest out in full",
                        node.start_mark,
                    )
                return super().construct_object(node, deep)

        loader = _LOADERS[base] = NoAliasLoader
    return loader


def shape_problem(obj) -> Optional[str]:
    """What makes a loaded document something no Kubernetes object can be, or None: a
    mapping key that is not a string (YAML reads `1:`, `true:`, `null:` and dates as other
    types), nesting deeper than MAX_DEPTH, or a kind or name that is not a string. Walked
    once, without recursion, before anything else reads the document."""
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    return f"a mapping key is {type(key).__name__} {excerpt(key, 40)}, not a string"
                stack.append((child, depth + 1))
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    spec = obj.get("spec")
    refs = [("kind", obj.get("kind"))]
    refs += [(f"metadata.{k}", _mapping(obj.get("metadata")).get(k)) for k in ("name", "namespace")]
    for ref in ("instancetype", "preference"):
        found = _mapping(_mapping(spec).get(ref))
        refs += [(f"spec.{ref}.{k}", found.get(k)) for k in ("name", "kind")]
    for where, value in refs:
        if value is not None and not isinstance(value, str):
            return f"{where} is {type(value).__name__}, not a string"
    return None


# -- KubeVirt's instancetype and preference application ------------------------------------


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


# Parts of a VMI spec that check-vm reads as objects; hostile input may hold anything there.
_OBJECT_PATHS = (
    "domain",
    "domain.firmware",
    "domain.firmware.bootloader",
    "domain.firmware.bootloader.efi",
    "domain.firmware.kernelBoot",
    "domain.firmware.kernelBoot.container",
    "domain.features",
    "domain.features.smm",
    "domain.launchSecurity",
    "domain.launchSecurity.sev",
    "domain.cpu",
    "domain.memory",
    "domain.devices",
    "nodeSelector",
)


def _child(parent: dict, key: str) -> dict:
    """parent[key] as an object to fill in; an absent or null one becomes {}."""
    if not isinstance(parent.get(key), dict):
        parent[key] = {}
    return parent[key]


def _malformed(spec: dict, where: str) -> Optional[str]:
    """The first part of a VMI spec that should be an object and is not, or None."""
    for path in _OBJECT_PATHS:
        value = spec
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, dict):
            return f"{where}.{path} is not an object"
    return None


def _reference(ref: dict, default_kind: str, what: str, definitions: dict):
    """(name, spec) of a referenced instancetype or preference; InputError-like text if not."""
    if "inferFromVolume" in ref and not ref.get("name"):
        return None, f"its {what} is inferred from a volume, which cannot be resolved offline"
    name = ref.get("name")
    kind = ref.get("kind") or default_kind
    found = definitions.get((kind, name))
    if found is None:
        kind, name = excerpt(kind, NAME_SHOWN), excerpt(name, NAME_SHOWN)
        return None, (
            f"{what} {kind}/{name} is not one of nfd-snp's: pass its definition too "
            f"(`kubectl get {kind.lower()} {name} -o yaml`)"
        )
    return excerpt(name, NAME_SHOWN), _mapping(found.get("spec"))


def _apply_instancetype(name: str, spec: dict, vmi: dict, result: Result) -> None:
    """KubeVirt pkg/instancetype/apply: the instancetype's fields, or a conflict each."""
    vmi_spec = vmi["spec"]
    domain = _child(vmi_spec, "domain")
    where = "spec.template.spec"

    def conflict(path: str) -> None:
        result.errors.append(
            f"{where}.{path} conflicts with instancetype {name}, which sets it (KubeVirt "
            f"refuses the VM): remove it from the VM"
        )

    if spec.get("nodeSelector") is not None:
        if vmi_spec.get("nodeSelector") is not None:
            conflict("nodeSelector")
        else:
            vmi_spec["nodeSelector"] = dict(_mapping(spec["nodeSelector"]))
    if spec.get("launchSecurity") is not None:
        if domain.get("launchSecurity") is not None:
            conflict("domain.launchSecurity")
        else:
            domain["launchSecurity"] = copy.deepcopy(spec["launchSecurity"])
    cpu = _mapping(domain.get("cpu"))
    for topology in ("sockets", "cores", "threads"):
        if cpu.get(topology):
            conflict(f"domain.cpu.{topology}")
    if _mapping(domain.get("memory")).get("guest") is not None:
        conflict("domain.memory.guest")
    annotations = vmi["metadata"]["annotations"]
    for key, value in _mapping(spec.get("annotations")).items():
        if key in annotations and annotations[key] != value:
            result.errors.append(
                f"the annotation {excerpt(key, NAME_SHOWN)} conflicts with instancetype "
                f"{name}'s (KubeVirt refuses the VM): remove it from the VM"
            )
        annotations.setdefault(key, value)


def _apply_preference(spec: dict, vmi: dict) -> None:
    """KubeVirt pkg/instancetype/preference/apply: fill only what the VM left unset."""
    domain = _child(vmi["spec"], "domain")
    firmware = _mapping(spec.get("firmware"))
    bootloader = _mapping(_mapping(domain.get("firmware")).get("bootloader"))
    if firmware and "efi" not in bootloader and "bios" not in bootloader:
        efi = None
        if firmware.get("preferredEfi") is not None:
            efi = copy.deepcopy(firmware["preferredEfi"])
        elif firmware.get("preferredUseEfi"):
            efi = {}
            if firmware.get("preferredUseSecureBoot") is not None:
                efi["secureBoot"] = firmware["preferredUseSecureBoot"]
        if efi is not None:
            _child(_child(domain, "firmware"), "bootloader")["efi"] = efi
    features = _mapping(spec.get("features"))
    if features.get("preferredSmm") is not None:
        domain_features = _child(domain, "features")
        if domain_features.get("smm") is None:
            domain_features["smm"] = copy.deepcopy(features["preferredSmm"])
    if spec.get("preferredLaunchSecurity") is not None and domain.get("launchSecurity") is None:
        domain["launchSecurity"] = copy.deepcopy(spec["preferredLaunchSecurity"])
    annotations = vmi["metadata"]["annotations"]
    for key, value in _mapping(spec.get("annotations")).items():
        annotations.setdefault(key, value)


def expand(obj: dict, definitions: dict, result: Result) -> Optional[dict]:
    """The VMI KubeVirt would create for a VM (a VMI is returned as it is)."""
    metadata = _mapping(obj.get("metadata"))
    if obj.get("kind") == "VirtualMachineInstance":
        vmi = copy.deepcopy(obj)
        vmi["metadata"] = dict(metadata)
        vmi["metadata"]["annotations"] = dict(_mapping(metadata.get("annotations")))
        vmi["spec"] = _mapping(vmi.get("spec"))
        result.unchecked = _malformed(vmi["spec"], "spec")
        return None if result.unchecked else vmi
    spec = _mapping(obj.get("spec"))
    template = _mapping(spec.get("template"))
    template_meta = _mapping(template.get("metadata"))
    result.unchecked = _malformed(_mapping(template.get("spec")), "spec.template.spec")
    if result.unchecked:
        return None
    vmi_meta = {k: metadata[k] for k in ("name", "namespace") if metadata.get(k) is not None}
    vmi_meta["annotations"] = dict(_mapping(template_meta.get("annotations")))
    if template_meta.get("labels") is not None:
        vmi_meta["labels"] = dict(_mapping(template_meta["labels"]))
    vmi = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": vmi_meta,
        "spec": copy.deepcopy(_mapping(template.get("spec"))),
    }
    instancetype = _mapping(spec.get("instancetype"))
    preference = _mapping(spec.get("preference"))
    resolved = []
    for ref, default_kind, what in (
        (instancetype, "VirtualMachineClusterInstancetype", "instancetype"),
        (preference, "VirtualMachineClusterPreference", "preference"),
    ):
        if not ref:
            resolved.append(None)
            continue
        name, found = _reference(ref, default_kind, what, definitions)
        if name is None:
            result.unchecked = found
            return None
        result.uses.append(f"{what} {name}")
        resolved.append((name, found))
    if resolved[0] is not None:
        _apply_instancetype(resolved[0][0], resolved[0][1], vmi, result)
    if resolved[1] is not None:
        _apply_preference(resolved[1][1], vmi)
    # An instancetype or preference from the input may hold anything, too.
    result.unchecked = _malformed(vmi["spec"], "the VMI's spec")
    return None if result.unchecked else vmi


# -- KubeVirt's admission rules for launchSecurity -----------------------------------------


def _enabled(state) -> bool:
    """A v1.FeatureState: present means enabled unless `enabled: false`."""
    return state is not None and _mapping(state).get("enabled", True) is not False


def admission(vmi: dict) -> List[str]:
    """What KubeVirt's webhook refuses in an AMD launchSecurity (ValidateLaunchSecurityAmd64)."""
    spec = vmi["spec"]
    domain = _mapping(spec.get("domain"))
    launch = _mapping(domain.get("launchSecurity"))
    chosen = [name for name in ("sev", "snp", "tdx") if launch.get(name) is not None]
    if len(chosen) != 1:
        return [
            "KubeVirt accepts one and only one launchSecurity type; this VM sets "
            + (" and ".join(chosen) or "none")
        ]
    errors = []
    kind = chosen[0].upper()
    efi = _mapping(_mapping(domain.get("firmware")).get("bootloader")).get("efi")
    if efi is None:
        errors.append(
            f"{kind} requires UEFI: set spec.domain.firmware.bootloader.efi.secureBoot: false "
            f"(or use preference {km.PREFERENCE})"
        )
    else:
        efi = _mapping(efi)
        if efi.get("secureBoot") is not False:
            errors.append(
                f"{kind} does not work along with Secure Boot, which KubeVirt enables unless "
                "efi.secureBoot is false: set it"
            )
        if chosen[0] == "snp" and efi.get("persistent") is True:
            errors.append("SNP does not work along with persistent EFI variables: remove it")
    sev = launch.get("sev")
    if _mapping(sev).get("attestation") is not None and spec.get("startStrategy") != "Paused":
        errors.append("SEV attestation requires startStrategy: Paused")
    interfaces = _mapping(domain.get("devices")).get("interfaces")
    for iface in interfaces if isinstance(interfaces, list) else []:
        if isinstance(iface, dict) and iface.get("bootOrder") is not None:
            nic = excerpt(iface.get("name"), NAME_SHOWN)
            errors.append(f"{kind} does not work with bootable NICs ({nic})")
    return errors


def smm(vmi: dict) -> List[str]:
    """QEMU refuses SMM for SNP guests ("SEV-SNP does not support SMM."), as does the sidecar."""
    features = _mapping(_mapping(vmi["spec"].get("domain")).get("features"))
    if _enabled(features.get("smm")):
        return ["SEV-SNP guests cannot use SMM: set spec.domain.features.smm.enabled: false"]
    return []


# -- the sidecar ---------------------------------------------------------------------------


def sidecar_entry(annotations: dict, configmap: str) -> Tuple[Optional[dict], List[str]]:
    """nfd-snp's entry of hooks.kubevirt.io/hookSidecars (or None) and what is wrong with it."""
    raw = annotations.get(km.SIDECAR_ANNOTATION)
    if raw is None:
        return None, []
    try:
        entries = json.loads(raw)
    except (TypeError, ValueError, RecursionError):
        return None, [f"{km.SIDECAR_ANNOTATION} is not valid JSON: KubeVirt refuses the VMI"]
    if not isinstance(entries, list):
        return None, [f"{km.SIDECAR_ANNOTATION} must be a JSON list of sidecars"]
    for entry in entries:
        ref = _mapping(_mapping(entry).get("configMap"))
        if ref.get("name") != configmap:
            continue
        problems = []
        if ref.get("key") != km.SIDECAR_KEY or ref.get("hookPath") != km.SIDECAR_HOOK_PATH:
            problems.append(
                f"the {configmap} sidecar must mount key {km.SIDECAR_KEY} at {km.SIDECAR_HOOK_PATH}"
            )
        args = entry.get("args") if isinstance(entry.get("args"), list) else []
        version = args[args.index("--version") + 1] if "--version" in args[:-1] else None
        if version not in km.SIDECAR_VERSIONS:
            problems.append(
                f"the {configmap} sidecar needs args [--version, {km.SIDECAR_VERSION}]: the "
                "shim refuses to start without a hook API version"
            )
        return entry, problems
    return None, []


# A domain with the parts of KubeVirt's that the sidecar reads (virt-launcher's converter:
# os.go for the firmware, launch_security.go for launchSecurity, kernel boot containers).
_DOMAIN = """<domain type="kvm">
  <name>{name}</name>
  <os>
    <type arch="x86_64" machine="q35">hvm</type>
    {firmware}{kernel}
  </os>
  <features><acpi/></features>
  <devices>
    <disk type="file" device="disk"><driver name="qemu" type="raw"/>
      <target bus="virtio" dev="vda"/></disk>
  </devices>
  <launchSecurity type="{launch}"><policy>{policy}</policy></launchSecurity>
</domain>
"""


def kubevirt_domain(vmi: dict) -> str:
    """A stand-in for the domain KubeVirt defines for this VMI, as far as the sidecar cares."""
    domain = _mapping(vmi["spec"].get("domain"))
    launch = _mapping(domain.get("launchSecurity"))
    firmware = _mapping(domain.get("firmware"))
    if launch.get("snp") is not None:
        loader = '<loader readonly="yes" secure="no" type="rom">/usr/share/OVMF/OVMF.amdsev.fd'
        loader += "</loader>"
        kind, policy = "sev-snp", "0x30000"
    else:
        loader = (
            '<loader readonly="yes" secure="no" type="pflash">/usr/share/OVMF/OVMF_CODE.cc.fd'
            '</loader><nvram template="/usr/share/OVMF/OVMF_VARS.fd">/var/run/kubevirt-private'
            "/libvirt/qemu/nvram/vmi_VARS.fd</nvram>"
        )
        kind, policy = "sev", "0x0007"
    kernel = ""
    container = _mapping(_mapping(firmware.get("kernelBoot")).get("container"))
    if container.get("kernelPath"):
        kernel = "<kernel>/var/run/kubevirt-ephemeral-disks/kernel-boot/vmlinuz</kernel>"
    return _DOMAIN.format(name="vmi", firmware=loader, kernel=kernel, launch=kind, policy=policy)


# -- one VM --------------------------------------------------------------------------------

# What serves a VM's SEV-SNP request, by how it asks and what the cluster runs.
PATH_PLUGINS = "Plugins: nfd-snp's node hook and CEL domain hook (KubeVirt 1.9+)"
PATH_SIDECAR = "hook sidecar (Sidecar feature gate)"
PATH_DEFAULTS = "KubeVirt's own SEV-SNP, without nfd-snp's options"
PATH_SEV = "SEV made SEV-SNP by the hook sidecar (KubeVirt before 1.7)"


def _path(request: str, entry, plugins: bool) -> str:
    if request != UPSTREAM:
        return PATH_SEV
    if entry is not None:
        return PATH_SIDECAR + (" and the Plugin's hooks" if plugins else "")
    return PATH_PLUGINS if plugins else PATH_DEFAULTS


def node_hook_answer(vmi: dict, node_view, label: str) -> str:
    """What the Plugin's node hook answers at PreVMStart on the node of `node_view`."""
    from nfd_snp.kubevirt import node_hook

    body = json.dumps(vmi, default=str).encode()
    answer = node_hook.decide("PreVMStart", body, label, node_view, node_view.probed_at)
    return "admits it" if answer.admitted else f"refuses it ({answer.code}): {answer.message}"


def judge_on_node(request, node, said: Sequence[str] = ()) -> List[str]:
    """What one node (label, NodeFacts) would refuse of an SEV-SNP request: the node cannot
    run SNP guests at all, or its KVM or firmware refuses the policy (check_policy, as the
    libvirt hook judges it there) for a reason not already `said` of every node."""
    from nfd_snp.domain.options import with_defaults

    label, facts = node
    errors = []
    if facts.snp_ready != "yes":
        because = f"; blocked by: {', '.join(facts.blocking)}" if facts.blocking else ""
        errors.append(
            f"node {label} cannot run SEV-SNP guests (readiness {facts.snp_ready}{because})"
        )
    try:
        with_defaults(request, {}, facts)  # the hook's defaulting and policy check
    except DomainError as exc:
        if not any(str(exc) in line for line in said):
            errors.append(f"node {label}: {exc}")
    return errors


def check(
    obj: dict,
    definitions: dict,
    configmap: str,
    vep_field: bool,
    node=None,
    plugins: bool = False,
    node_view=None,
) -> Result:
    metadata = _mapping(obj.get("metadata"))
    name = excerpt(metadata.get("name") or "(no name)", NAME_SHOWN)
    if metadata.get("namespace"):
        name = f"{excerpt(metadata['namespace'], NAME_SHOWN)}/{name}"
    result = Result(kind=excerpt(obj.get("kind"), NAME_SHOWN), name=name)
    vmi = expand(obj, definitions, result)
    if vmi is None:
        return result
    launch = _mapping(_mapping(vmi["spec"].get("domain")).get("launchSecurity"))
    sev = _mapping(launch.get("sev"))
    if "secureNestedPaging" in sev and not vep_field:
        result.errors.append(
            "KubeVirt's API has no launchSecurity.sev.secureNestedPaging (VEP #58): kubectl "
            "refuses it (strict field validation) or the API server drops it; use "
            "launchSecurity.snp (KubeVirt 1.7+) or the annotation "
            f'{kubevirt.REQUEST_ANNOTATION}: "true" (--vep-field if your KubeVirt has it)'
        )
    try:
        result.request = kubevirt.request_form(vmi)
    except DomainError as exc:
        result.errors.append(f"the sidecar would refuse it: {exc}")
        return result
    if result.request is None:
        if launch.get("sev") is not None:
            result.errors.append(
                "asks for SEV, not SEV-SNP: use launchSecurity.snp or add the annotation "
                f'{kubevirt.REQUEST_ANNOTATION}: "true"'
            )
        else:
            result.errors.append(
                f"does not ask for SEV-SNP: name an SEV-SNP instancetype ({km.UPSTREAM}.medium "
                f"with preference {km.PREFERENCE}, or {km.ON_SEV}.medium before KubeVirt 1.7)"
            )
        return result
    result.errors += admission(vmi) + smm(vmi)
    annotations = vmi["metadata"]["annotations"]
    options = {k: v for k, v in annotations.items() if k.startswith(kubevirt.ANNOTATION_PREFIX)}
    options.pop(kubevirt.REQUEST_ANNOTATION, None)
    try:
        request = kubevirt.snp_request(vmi)
    except (DomainError, InputError) as exc:
        result.errors.append(str(exc))
        return result
    result.options = [
        f"{k}={v}" if k in ("policy", "firmware") else k
        for k, v in sorted(request.as_strings().items())
    ]
    # On the Plugins path with a node, the node hook's answer is the whole verdict: it checks
    # the request as below and then the node, as judge_on_node does for the sidecar path.
    node_hook_judges = plugins and node_view is not None
    entry, problems = sidecar_entry(annotations, configmap)
    result.errors += problems
    result.path = _path(result.request, entry, plugins)
    if node_hook_judges:
        result.node_hook = node_hook_answer(vmi, node_view, node[0] if node else "the node")
    elif plugins:
        from nfd_snp.kubevirt import node_hook

        problem = node_hook.request_problem(vmi, result.request, request)
        if problem:
            result.errors.append(f"the nfd-snp node hook would refuse it: {problem}")
    if entry is None and plugins and result.request == UPSTREAM:
        pass  # the Plugin's CEL domain hook writes the options
    elif entry is None:
        if result.request != UPSTREAM:
            result.errors.append(
                f"no nfd-snp sidecar ({km.SIDECAR_ANNOTATION} naming ConfigMap {configmap}): "
                "KubeVirt would start it as a plain SEV guest"
            )
        elif options:
            result.errors.append(
                f"no nfd-snp sidecar ({km.SIDECAR_ANNOTATION} naming ConfigMap {configmap}): "
                f"the annotations {', '.join(excerpt(k, NAME_SHOWN) for k in sorted(options))} "
                "would be ignored"
            )
        else:
            result.warnings.append(
                "no nfd-snp sidecar: KubeVirt's SEV-SNP defaults apply (policy 0x30000, no options)"
            )
    else:
        try:
            # default=str: YAML reads unquoted dates as dates; KubeVirt sees strings there.
            kubevirt.on_define_domain(json.dumps(vmi, default=str), kubevirt_domain(vmi))
        except (DomainError, InputError) as exc:
            result.errors.append(f"the sidecar would refuse it: {exc}")
    if node is not None and not node_hook_judges:
        result.errors += judge_on_node(request, node, said=result.errors)
    selector = _mapping(vmi["spec"].get("nodeSelector"))
    if selector.get(km.NODE_LABEL) != "true":
        text = (
            f'no nodeSelector {km.NODE_LABEL}: "true": it may be scheduled on a node '
            "where SEV-SNP guests cannot run"
        )
        # KubeVirt 1.7+ selects kubevirt.io/sev-snp nodes for launchSecurity.snp on its own;
        # the SEV path only selects SEV nodes.
        (result.warnings if result.request == UPSTREAM else result.errors).append(text)
    return result


def check_documents(
    objects: list,
    *,
    configmap: str = km.SIDECAR_CONFIGMAP,
    vep_field: bool = False,
    node: Optional[Tuple[str, object]] = None,
    plugins: bool = False,
    node_view=None,
) -> List[Result]:
    """Check every VM/VMI in `objects`; `node` (label, NodeFacts) also judges them there, and
    `node_view` (a node_hook.NodeView of it) says what the Plugin's node hook answers.
    `plugins`: the cluster runs nfd-snp's Plugin (KubeVirt 1.9+) and its instancetypes."""
    for obj in objects:
        problem = shape_problem(obj)
        if problem:
            name = excerpt(_mapping(obj.get("metadata")).get("name") or "(no name)", NAME_SHOWN)
            raise InputError(f"a document ({name}) is not a Kubernetes object: {problem}")
    definitions = km.builtin_definitions(plugins)
    for obj in objects:
        if obj.get("kind") in DEFINITION_KINDS:
            name = _mapping(obj.get("metadata")).get("name")
            definitions[(obj["kind"], name)] = obj
    vms = [obj for obj in objects if obj.get("kind") in VM_KINDS]
    if not vms:
        raise InputError("no VirtualMachine or VirtualMachineInstance in the input")
    return [check(vm, definitions, configmap, vep_field, node, plugins, node_view) for vm in vms]


def render(results: List[Result]) -> str:
    lines = []
    for r in results:
        head = f"{r.kind} {r.name}: "
        if r.unchecked:
            head += f"cannot check: {r.unchecked}"
        elif r.served:
            head += f"SEV-SNP ({r.request}"
            head += f"; {', '.join(r.uses)})" if r.uses else ")"
            head += f"; options: {', '.join(r.options)}" if r.options else "; default options"
        elif r.request is None:
            head += "not an SEV-SNP VM"
        else:
            head += f"asks for SEV-SNP ({r.request}) but would not get it"
        lines.append(head)
        if r.path:
            lines.append(f"  path: {r.path}")
        if r.node_hook:
            lines.append(f"  node hook: {r.node_hook}")
        lines += [f"  error: {e}" for e in r.errors]
        lines += [f"  warning: {w}" for w in r.warnings]
    # Names and values from the input are in these lines: a newline in one must not forge a
    # line of its own, nor an escape sequence reach the terminal.
    return "\n".join(printable(line) for line in lines) + "\n"


def exit_status(results: List[Result]) -> int:
    """0 every VM gets SEV-SNP, 1 one would not, 2 one cannot be checked from this input."""
    if any(r.unchecked for r in results):
        return 2
    return 0 if all(r.served for r in results) else 1
