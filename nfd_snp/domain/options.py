"""The SEV-SNP request and its options, validated before libvirt sees them.

Names follow libvirt's domain XML (formatdomain.html, "Launch Security"), so an option reads
the same in the marker `<snp:sev-snp policy='0x30000' hostData='...'/>`, in a KubeVirt
annotation and in the resulting `<launchSecurity type='sev-snp'>`.
"""

from __future__ import annotations

import base64
import binascii

from nfd_snp.errors import DomainError

# Exact decoded sizes (SEV-SNP firmware ABI, SNP_LAUNCH_FINISH / SNP_LAUNCH_START).
BASE64_SIZES = {
    "guestVisibleWorkarounds": 16,
    "idBlock": 96,
    "idAuth": 4096,
    "hostData": 32,
}
BOOLEANS = ("authorKey", "vcek", "kernelHashes")
OPTION_NAMES = ("policy", *BASE64_SIZES, *BOOLEANS, "firmware")

# SNP guest policy (SEV-SNP ABI, "Guest Policy"): 7:0 ABI minor, 15:8 ABI major, 16 SMT,
# 17 reserved and must be 1, 18 migration agent, 19 debug, 20 single socket, 21 CXL,
# 22 AES-256-XTS, 23 RAPL disabled, 24 ciphertext hiding, 63:25 must be 0.
POLICY_RESERVED_ONE = 1 << 17
POLICY_DEBUG = 1 << 19
POLICY_VALID_MASK = (1 << 25) - 1
# QEMU's sev-snp-guest default (and KubeVirt's): SMT allowed + the reserved bit.
DEFAULT_POLICY = 0x00030000


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


def format_policy(value: int) -> str:
    # libvirt's schema (hexuint) accepts lower-case hex only.
    return f"0x{value:08x}"


def check_policy(value: int, node_api=None) -> None:
    """Refuse a policy KVM or the node's firmware would refuse, with the reason."""
    if value & ~POLICY_VALID_MASK:
        raise DomainError(f"policy {format_policy(value)}: bits 63:25 are reserved and must be 0")
    if not value & POLICY_RESERVED_ONE:
        raise DomainError(
            f"policy {format_policy(value)}: bit 17 is reserved and must be 1 (KVM refuses the "
            "guest otherwise; the default is 0x00030000)"
        )
    wanted = ((value >> 8) & 0xFF, value & 0xFF)
    if node_api is not None and wanted > tuple(node_api):
        raise DomainError(
            f"policy {format_policy(value)} requires SNP firmware ABI {wanted[0]}.{wanted[1]}, "
            f"but this node runs {node_api[0]}.{node_api[1]}"
        )


def check_base64(name: str, text: str) -> str:
    value = "".join(text.split())
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DomainError(f"{name}: not valid base64") from None
    size = BASE64_SIZES[name]
    if len(decoded) != size:
        raise DomainError(f"{name}: decodes to {len(decoded)} bytes, must be exactly {size}")
    return value


def parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise DomainError(f"{name}: {text[:20]!r} is not yes or no")


class SnpOptions:
    """Options a domain gave for SEV-SNP; None means "not given"."""

    __slots__ = OPTION_NAMES

    def __init__(self, **values) -> None:
        for name in OPTION_NAMES:
            setattr(self, name, values.pop(name, None))
        if values:
            raise DomainError(f"unknown SEV-SNP option {sorted(values)[0]!r}")

    @classmethod
    def from_strings(cls, values: dict, where: str = "SEV-SNP request") -> "SnpOptions":
        """Validate string options (marker attributes, annotations, --option flags)."""
        parsed = {}
        for name, text in values.items():
            if name not in OPTION_NAMES:
                known = ", ".join(OPTION_NAMES)
                raise DomainError(f"{where}: unknown option {name!r} (known: {known})")
            if name == "policy":
                parsed[name] = parse_policy(text, f"{where}: policy")
            elif name in BASE64_SIZES:
                parsed[name] = check_base64(name, text)
            elif name in BOOLEANS:
                parsed[name] = parse_bool(name, text)
            else:
                path = text.strip()
                if not path.startswith("/"):
                    raise DomainError(f"{where}: firmware must be an absolute path")
                parsed[name] = path
        return cls(**parsed)

    def as_strings(self) -> dict:
        """The inverse of from_strings, for writing the marker."""
        out = {}
        for name in OPTION_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "policy":
                out[name] = format_policy(value)
            elif name in BOOLEANS:
                out[name] = "yes" if value else "no"
            else:
                out[name] = value
        return out
