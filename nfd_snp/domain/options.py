"""SEV-SNP launch settings: one declaration per property, from which everything else follows.

Each `SnpOptions` class attribute declares one property in libvirt's spelling
(formatdomain.html, "Launch Security"), as virt-manager's virtinst declares
`DomainLaunchSecurity`: where it lands in the domain, its type and validation, its KubeVirt
annotation and its help line. The request marker `<snp:sev-snp policy=... hostData=.../>`,
`--option NAME=VALUE` flags, `sev-snp.kubevirt.io/<annotation>` annotations, reading,
writing and comparing `<launchSecurity type='sev-snp'>` (nfd_snp.domain.engine), the
`nfd-snp domain --help` list and the docs' option tables all come from these declarations,
so adding a libvirt field is one line here plus its tests.

Parsing gives only what was given (None for the rest); the defaults (policy, this node's
C-bit, firmware) are a separate step, `with_defaults`.
"""

from __future__ import annotations

from nfd_snp import snp_policy
from nfd_snp.errors import DomainError


class OptionError(DomainError):
    """An SEV-SNP option that is unknown (`unknown`) or whose value is invalid: `option`
    names it, so a caller can say where to correct it."""

    def __init__(self, message: str, option: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.option = option
        self.unknown = unknown


class PolicyRefused(DomainError):
    """A policy that KVM or this node's firmware would refuse (check_policy)."""


_HEX_DIGITS = "0123456789abcdef"
_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def parse_policy(text: str, where: str = "policy") -> int:
    """A 64-bit policy from `0x30000` or `196608`; DomainError for anything else."""
    raw = text.strip()
    try:
        value = int(raw, 16) if raw.lower().startswith("0x") else int(raw, 10)
    except ValueError:
        raise DomainError(f"{where}: {raw[:40]!r} is not a number (use hex like 0x30000)") from None
    if not 0 <= value < 1 << 64:
        raise DomainError(f"{where}: {raw[:40]} does not fit in 64 bits")
    return value


def check_policy(value: int, node=None) -> None:
    """Refuse a policy KVM or the node's firmware would refuse, with the reason.

    The one place policy bits are judged. Without node facts (KubeVirt's sidecar, `domain
    rewrite --facts none`) only what every Linux refuses; with them (NodeFacts: the
    service's facts cache) also the bits this node's KVM does not accept
    (KVM_X86_SNP_POLICY_BITS, or its kernel version's rule) and a minimum firmware ABI
    above the node's, which the firmware refuses. Otherwise SNP_LAUNCH_START fails with
    "ret=-22 fw_error=0" (KVM) or POLICY_FAILURE (firmware), far from the cause.
    """
    shown = f"policy {snp_policy.format_policy(value)}"
    if value & ~snp_policy.VALID_MASK:
        raise PolicyRefused(f"{shown}: bits 63:26 are reserved and must be 0")
    if not value & snp_policy.RESERVED_MBO:
        raise PolicyRefused(
            f"{shown}: bit 17 is reserved and must be 1 (KVM refuses the guest otherwise; the "
            "default is 0x00030000)"
        )
    if value & snp_policy.MIGRATION_AGENT:
        # KVM's accepted mask leaves bit 18 out in every version (arch/x86/kvm/svm/sev.c
        # SNP_POLICY_MASK_VALID, KVM_SNP_POLICY_MASK_VALID): AMDESE/AMDSEV#240.
        raise PolicyRefused(
            f"{shown}: bit 18 (migration agent) is refused by KVM (SNP_LAUNCH_START ret=-22); "
            "use 0x00030000 or clear it"
        )
    if node is None:
        return
    if node.snp_policy is not None:
        refusal = node.snp_policy.refusal(value)
        if refusal:
            raise PolicyRefused(f"{shown}: this node's KVM refuses it ({refusal})")
    wanted = snp_policy.abi(value)
    if node.snp_api is not None and wanted > node.snp_api:
        raise PolicyRefused(
            f"{shown} requires SNP firmware ABI {wanted[0]}.{wanted[1]}, "
            f"but this node runs {node.snp_api[0]}.{node.snp_api[1]}"
        )


# -- value types ------------------------------------------------------------------------------


class Kind:
    """How one property's value is read, checked and written.

    `parse` reads an option string (marker attribute, --option flag, annotation);
    `from_xml` reads the domain's XML as libvirt reads it; `to_xml` writes what libvirt's
    schema accepts; `says` tells whether existing XML text already holds a value, so that
    it is left byte for byte alone. Errors are DomainError, prefixed with `label`.
    """

    describe = ""

    def parse(self, text: str, label: str):
        raise NotImplementedError

    def from_xml(self, text: str, label: str):
        return self.parse(text, label)

    def to_xml(self, value) -> str:
        return str(value)

    def says(self, text: str | None, value) -> bool:
        return text == self.to_xml(value)


class Unsigned(Kind):
    """A small unsigned number (libvirt's unsignedInt; C-bit position, reduced phys bits)."""

    describe = "a small unsigned number"

    def parse(self, text: str, label: str) -> int:
        raw = text.strip()
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 4:
            raise DomainError(f"{label}: {raw[:20]!r} is not a small unsigned number")
        return int(raw)

    def says(self, text, value) -> bool:
        raw = (text or "").strip()
        return raw.isascii() and raw.isdigit() and int(raw) == value


class Policy(Kind):
    """The 64-bit SNP guest policy; its bits are judged by check_policy, with node facts."""

    describe = "hex (0x30000) or decimal"

    def parse(self, text: str, label: str) -> int:
        return parse_policy(text, label)

    def from_xml(self, text: str, label: str) -> int:
        # libvirt reads <policy> in base 16, 0x or not (schema type hexuint, `(0x)?[0-9a-f]+`):
        # `196608` there is 0x196608, never decimal.
        raw = text.strip()
        digits = raw[2:] if raw.startswith("0x") else raw
        if not digits or digits.strip(_HEX_DIGITS) or len(digits) > 16:
            raise DomainError(f"{label}: {raw[:40]!r} is not a lower-case hex number")
        return int(digits, 16)

    def to_xml(self, value: int) -> str:
        return snp_policy.format_policy(value)

    def says(self, text, value) -> bool:
        try:
            return text is not None and self.from_xml(text, "") == value
        except DomainError:
            return False


class Base64(Kind):
    """Base64 of an exact number of bytes (the SNP firmware ABI fixes each size)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.describe = f"base64 of exactly {size} bytes"

    def parse(self, text: str, label: str) -> str:
        # Checked by hand rather than with base64's validate=True, which imports `re`, and
        # binascii imported here: the hook's prepare check of most domains never needs it.
        import binascii

        value = "".join(text.split())
        body = value.rstrip("=")
        if len(value) % 4 or len(value) - len(body) > 2 or body.strip(_BASE64_ALPHABET):
            raise DomainError(f"{label}: not valid base64")
        try:
            decoded = binascii.a2b_base64(value)
        except (binascii.Error, ValueError):
            raise DomainError(f"{label}: not valid base64") from None
        if len(decoded) != self.size:
            raise DomainError(
                f"{label}: decodes to {len(decoded)} bytes, must be exactly {self.size}"
            )
        return value

    def says(self, text, value) -> bool:
        return text is not None and "".join(text.split()) == value


class YesNo(Kind):
    """libvirt's virYesNo; options also take true/false, on/off, 1/0."""

    describe = "yes/no"

    def parse(self, text: str, label: str) -> bool:
        value = text.strip().lower()
        if value in ("yes", "true", "on", "1"):
            return True
        if value in ("no", "false", "off", "0"):
            return False
        raise DomainError(f"{label}: {text[:20]!r} is not yes or no")

    def to_xml(self, value: bool) -> str:
        return "yes" if value else "no"


class AbsolutePath(Kind):
    describe = "absolute path"

    def parse(self, text: str, label: str) -> str:
        path = text.strip()
        if not path.startswith("/"):
            raise DomainError(f"{label}: {path[:60]!r} is not an absolute path")
        # XML 1.0 cannot carry C0 controls (lxml refuses them, xml.etree writes them and
        # libvirt then fails to parse the domain), and no firmware path holds one.
        if any(ord(c) < 32 or ord(c) == 127 for c in path):
            raise DomainError(f"{label}: {path[:60]!r} contains a control character")
        return path


# -- the declarations -------------------------------------------------------------------------


class Field:
    """One SEV-SNP property (virtinst's XMLProperty).

    `path` says where it lands in the domain: `launchSecurity/<element>`,
    `launchSecurity/@<attribute>`, or elsewhere (the firmware's `os/loader`). A property
    with a KubeVirt `annotation` is an option a request may give; one without is filled
    from the node. `host` marks what describes the host rather than the guest: it reads the
    node's value from its NodeFacts, which wins, and libvirt fills it at start when absent.
    `sev` marks what means the same in `<launchSecurity type='sev'>`, so it carries over
    from an SEV domain. `needs` declares a constraint between options: (the option a `yes`
    of this one needs, what that option is); `check_needs` enforces them all.

    As a class attribute of SnpOptions it reads None on an instance that was not given it.
    """

    def __init__(
        self,
        path: str,
        kind: Kind,
        annotation: str | None = None,
        help: str = "",
        *,
        host=None,
        sev: bool = False,
        needs: tuple | None = None,
    ) -> None:
        self.path = path
        self.kind = kind
        self.annotation = annotation
        self.help = help
        self.host = host
        self.sev = sev
        self.needs = needs
        self.name = ""
        where, _, leaf = path.partition("/")
        self.in_launch_security = where == "launchSecurity"
        self.attribute = leaf[1:] if self.in_launch_security and leaf.startswith("@") else None
        self.tag = leaf if self.in_launch_security and self.attribute is None else None

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instance, owner=None):
        # A non-data descriptor: values given to an instance live in its __dict__.
        return self if instance is None else None

    def __repr__(self) -> str:
        return f"<Field {self.name} at {self.path}>"

    @property
    def is_option(self) -> bool:
        return self.annotation is not None

    @property
    def help_line(self) -> str:
        """Value type, then what the property is: `nfd-snp domain --help` and the docs."""
        text = self.help or (f"yes needs {self.needs[0]}" if self.needs else "")
        return f"{self.kind.describe}; {text}" if text else self.kind.describe

    def unmet_need(self, settings) -> str | None:
        """Why `settings` (SnpOptions) break this property's `needs`, or None."""
        if self.needs is None or not getattr(settings, self.name):
            return None
        other, what = self.needs
        if getattr(settings, other) is not None:
            return None
        return f"{self.name}='yes' needs {other} ({what})"

    @property
    def xml_label(self) -> str:
        """How errors name the property in a domain's XML."""
        if self.attribute is not None:
            return f"launchSecurity {self.attribute}="
        return f"launchSecurity <{self.tag}>" if self.tag else self.path

    def parse(self, text: str, where: str):
        """The typed value of an option string; DomainError naming `where` and the option."""
        return self.kind.parse(text, f"{where}: {self.name}")

    def from_xml(self, text: str):
        return self.kind.from_xml(text, self.xml_label)


UNSIGNED = Unsigned()
YES_NO = YesNo()


class SnpOptions:
    """A domain's SEV-SNP settings, typed; None means "not given".

    A request holds the options it gave; `with_defaults` turns it into the settings to
    write, which also hold the node's properties. The declaration order is libvirt's
    formatting order (attributes among attributes, elements among elements).
    """

    cbitpos = Field(
        "launchSecurity/cbitpos",
        UNSIGNED,
        help="the C-bit (encryption bit) location in guest page table entries",
        host=lambda node: node.cbitpos,
        sev=True,
    )
    reducedPhysBits = Field(
        "launchSecurity/reducedPhysBits",
        UNSIGNED,
        help="the physical address bit reduction",
        host=lambda node: node.reducedPhysBits,
        sev=True,
    )
    policy = Field(
        "launchSecurity/policy",
        Policy(),
        "policy",
        "the SNP guest policy (default 0x00030000): bit 17 set, bit 18 clear, bits the "
        "node's KVM accepts, ABI (bits 15:0) not above its firmware's",
    )
    guestVisibleWorkarounds = Field(
        "launchSecurity/guestVisibleWorkarounds", Base64(16), "guest-visible-workarounds"
    )
    idBlock = Field("launchSecurity/idBlock", Base64(96), "id-block")
    idAuth = Field("launchSecurity/idAuth", Base64(4096), "id-auth")
    hostData = Field("launchSecurity/hostData", Base64(32), "host-data")
    kernelHashes = Field(
        "launchSecurity/@kernelHashes",
        YES_NO,
        "kernel-hashes",
        "yes needs direct kernel boot (<os><kernel>)",
        sev=True,
    )
    authorKey = Field(
        "launchSecurity/@authorKey",
        YES_NO,
        "author-key",
        needs=("idAuth", "the ID authentication block"),
    )
    vcek = Field("launchSecurity/@vcek", YES_NO, "vcek")
    firmware = Field(
        "os/loader", AbsolutePath(), "firmware", "an SNP-capable OVMF image, loaded as a ROM"
    )

    def __init__(self, **values) -> None:
        for name, value in values.items():
            if name not in FIELDS_BY_NAME:
                raise DomainError(f"unknown SEV-SNP option {name!r}")
            if value is not None:
                self.__dict__[name] = value

    def __repr__(self) -> str:
        return f"SnpOptions({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    @classmethod
    def from_strings(cls, values: dict, where: str = "SEV-SNP request") -> "SnpOptions":
        """Validate option strings (marker attributes, --option flags) by name."""
        parsed = {}
        for name, text in values.items():
            field = OPTIONS.get(name)
            if field is None:
                known = ", ".join(OPTIONS)
                message = f"{where}: unknown option {name!r} (known: {known})"
                raise OptionError(message, name, unknown=True)
            try:
                parsed[name] = field.parse(text, where)
            except OptionError:
                raise
            except DomainError as exc:
                raise OptionError(str(exc), name) from None
        return cls(**parsed)

    def as_strings(self) -> dict:
        """The options given, as marker attributes (the inverse of from_strings)."""
        return {
            name: field.kind.to_xml(getattr(self, name))
            for name, field in OPTIONS.items()
            if getattr(self, name) is not None
        }


FIELDS = tuple(v for v in vars(SnpOptions).values() if isinstance(v, Field))
FIELDS_BY_NAME = {field.name: field for field in FIELDS}
OPTIONS = {field.name: field for field in FIELDS if field.is_option}
ANNOTATIONS = {field.annotation: field for field in FIELDS if field.is_option}


def with_defaults(request: SnpOptions, current, node) -> SnpOptions:
    """The settings to write for a request: the defaulting step, apart from parsing.

    Each property comes from the request, else from what the domain already holds
    (`current.get(field)`: typed, or None), else its default: QEMU's policy 0x00030000, and
    from the node (NodeFacts or None) its C-bit, reduced phys bits and SNP firmware image.
    The node's host properties win over a domain's, which may come from another host.
    The policy is then judged against the node's firmware ABI.
    """
    values = {}
    for field in FIELDS:
        value = field.host(node) if field.host and node is not None else None
        if value is None:
            value = getattr(request, field.name)
        if value is None and field.in_launch_security:
            value = current.get(field)
        values[field.name] = value
    if values["policy"] is None:
        values["policy"] = snp_policy.DEFAULT
    if values["firmware"] is None and node is not None and node.snp_firmware:
        values["firmware"] = node.snp_firmware[0]
    check_policy(values["policy"], node)
    return SnpOptions(**values)


def check_needs(settings: SnpOptions) -> None:
    """Refuse settings where an option lacks the option it needs (authorKey needs idAuth)."""
    for field in FIELDS:
        unmet = field.unmet_need(settings)
        if unmet:
            raise DomainError(unmet)
