"""The SEV-SNP guest policy: its bits, KVM's rule for them, and how to name them.

SEV-SNP firmware ABI, "Guest Policy" (include/linux/psp-sev.h SNP_POLICY_MASK_*): 7:0 ABI
minor, 15:8 ABI major, 16 SMT, 17 reserved and must be 1, 18 migration agent, 19 debug,
20 single socket, 21 CXL, 22 AES-256-XTS, 23 RAPL disabled, 24 ciphertext hiding,
25 page-swap disable, 63:26 must be 0.

One module for the host model (what this node's KVM accepts), the option model (judging a
requested policy), the libvirt hook and `kubevirt check-vm`. The hook and the KubeVirt
sidecar import it: standard library only, nothing imported.
"""

SMT = 1 << 16
RESERVED_MBO = 1 << 17  # reserved, must be one
MIGRATION_AGENT = 1 << 18
DEBUG = 1 << 19
SINGLE_SOCKET = 1 << 20
VALID_MASK = (1 << 26) - 1  # bits 63:26 must be 0
# What each bit is, for refusals that name them.
NAMES = {
    16: "SMT",
    17: "reserved, must be 1",
    18: "migration agent",
    19: "debug",
    20: "single socket",
    21: "CXL",
    22: "AES-256-XTS",
    23: "RAPL disabled",
    24: "ciphertext hiding",
    25: "page-swap disable",
}
# QEMU's sev-snp-guest default (and KubeVirt's): SMT allowed + the reserved bit.
DEFAULT = SMT | RESERVED_MBO
# arch/x86/kvm/svm/sev.c SNP_POLICY_MASK_VALID before Linux 6.19: ABI minor and major (0-15),
# SMT (16), reserved-must-be-one (17), DEBUG (19), SINGLE_SOCKET (20). Bit 18 (migration
# agent) and bits 21+ fail SNP_LAUNCH_START with EINVAL (AMDESE/AMDSEV#240, policy 0x70000).
KVM_MASK_BEFORE_6_19 = 0x1BFFFF


def abi(policy: int) -> tuple:
    """(major, minor): the lowest SNP firmware ABI the guest accepts (bits 15:8, 7:0)."""
    return (policy >> 8) & 0xFF, policy & 0xFF


def format_policy(value: int) -> str:
    # libvirt's schema (hexuint) accepts lower-case hex only.
    return f"0x{value:08x}"


def describe_bits(mask: int) -> str:
    """`bit 18 (migration agent), bit 21 (CXL)` for the set bits of `mask`."""
    return ", ".join(
        f"bit {n} ({NAMES[n]})" if n in NAMES else f"bit {n}" for n in range(64) if mask >> n & 1
    )


class SnpPolicyRule:
    """Which SNP guest policies a host's KVM accepts at SNP_LAUNCH_START: every bit set must
    be in `accepted`, every bit of `required` must be set; `source` says where the rule
    comes from. (A plain class: the hook reads it from the facts cache, and `dataclasses`
    would cost it more than the rest of the cache.)"""

    __slots__ = ("accepted", "required", "source")

    def __init__(self, accepted: int, required: int, source: str) -> None:
        self.accepted = accepted
        self.required = required
        self.source = source

    def __eq__(self, other) -> bool:
        if not isinstance(other, SnpPolicyRule):
            return NotImplemented
        return (self.accepted, self.required, self.source) == (
            other.accepted,
            other.required,
            other.source,
        )

    def __hash__(self) -> int:
        return hash((self.accepted, self.required, self.source))

    def __repr__(self) -> str:
        return f"SnpPolicyRule({self.accepted:#x}, {self.required:#x}, {self.source!r})"

    def rejected_bits(self, policy: int) -> int:
        return policy & ~self.accepted

    def missing_bits(self, policy: int) -> int:
        return self.required & ~policy

    def refusal(self, policy: int) -> "str | None":
        """Why KVM refuses `policy` under this rule, or None when it accepts it."""
        refused, missing = self.rejected_bits(policy), self.missing_bits(policy)
        problems = []
        if refused:
            problems.append(f"{describe_bits(refused)} not accepted")
        if missing:
            problems.append(f"{describe_bits(missing)} required")
        if not problems:
            return None
        return f"{'; '.join(problems)}; accepted bits {self.accepted:#x}, from {self.source}"


def kvm_rule(policy_bits, kernel_version) -> "SnpPolicyRule | None":
    """The rule of a host's KVM: KVM_X86_SNP_POLICY_BITS where the kernel publishes it
    (6.19+: what KVM and the firmware accept), else what every kernel of its (major, minor)
    version accepts; None when neither says.

    From the version alone only the mask is certain: no KVM before 6.19 takes a bit outside
    0x1bffff. Upstream 6.10-6.16 also refuse a policy without SMT (16) or with SINGLE_SOCKET
    (20), but 6.17 dropped those checks ("Drop KVM's rejection of SNP's SMT and
    single-socket policy restrictions") and distributions backport it, so a guest is not
    refused on that guess; docs/troubleshooting.md maps the launch error if it happens.
    """
    if policy_bits is not None:
        return SnpPolicyRule(policy_bits, RESERVED_MBO, "KVM_X86_SNP_POLICY_BITS")
    version = kernel_version
    if version is None or version < (6, 10) or version >= (6, 19):
        return None
    return SnpPolicyRule(
        KVM_MASK_BEFORE_6_19, RESERVED_MBO, f"the rule of Linux {version[0]}.{version[1]}"
    )
