"""The libvirt hook's logic for domains whose XML mentions the SEV-SNP request namespace.

Fail-open for others, fail-closed for SNP: the hook's shell front (`hooks/qemu`, installed as
/etc/libvirt/hooks/qemu.d/50-nfd-snp) returns 0 for every operation it ignores and every
domain whose XML lacks the request namespace, and starts Python with `main` only for the
rest, so a VM start costs at most one Python start. Here, a domain that really asks
for SEV-SNP is refused (exit 1, one line on stderr saying why and what to run) unless it can
start as a valid SNP guest on this node; a domain that only mentions the namespace without
asking passes. The hook never calls libvirt (that would deadlock the daemon).

Speed: the hook runs on every start, so a domain of usual size is parsed with the standard
library (lxml's import alone costs about twice the interpreter's start); lxml, when
installed, takes over for documents above LXML_ABOVE bytes, where its faster parsing and
serialization outweigh its import. Both are hardened the same way (nfd_snp.xmlio).

Restore and migrate output is not validated against libvirt's RelaxNG schema here: that
needs lxml plus compiling libvirt's schema on every run (about 45 ms). Instead the hook
checks its own output with the same typed check as `prepare` (a launchSecurity of type
sev-snp holding what the request and this node say) and refuses the domain otherwise, so
what libvirt gets is an SNP guest or nothing; libvirt then parses the result itself. The
engine's output is validated against libvirt's schema by the test suite (every fixture,
and a property test over generated domains).
"""

from __future__ import annotations

import os
import sys

from nfd_snp.errors import DomainError, NfdSnpError, printable

FACTS_ENV = "NFD_SNP_FACTS_CACHE"
# What the shell front lets through: (operation, sub-operation).
HANDLED = (("prepare", "begin"), ("migrate", "begin"), ("restore", "begin"))
VERBS = {
    "prepare": "start",
    "migrate": "migrate in",
    "restore": "restore",
}  # tests only; libvirt runs hooks with a cleared environment
# Domains larger than this go through lxml when it is installed (see the module docstring;
# measured by bench/hook.py: lxml wins from a few hundred KiB).
LXML_ABOVE = 256 * 1024


def not_ready(node) -> str:
    """Why this node takes no SEV-SNP guest, as a person reads it: each blocking check's
    title (its name in `nfd-snp check`) and the first fix the service recorded."""
    if node.snp_ready == "no":
        text, kind = "this node cannot run SEV-SNP guests", "blocked by"
    else:
        text, kind = "this node's SEV-SNP readiness is unknown", "undecided"
    if node.blocked_by:
        text += f"; {kind}: " + ", ".join(f"{t} ({n})" for n, t, _ in node.blocked_by)
        fix = next((f for _, _, f in node.blocked_by if f), None)
        if fix:
            text += f"; fix: {fix.rstrip('.')}"
    elif node.blocking:  # a cache written before it held titles and fixes
        text += f"; {kind}: {', '.join(node.blocking)}"
    return text + "; `nfd-snp check` on the node shows every check"


def _ready_node():
    # The cache's module itself, not its nfd_snp.domain.node alias: one import fewer per start.
    from nfd_snp import facts_cache

    node = facts_cache.load(os.environ.get(FACTS_ENV) or facts_cache.DEFAULT_FACTS_CACHE)
    if node.snp_ready != "yes":
        raise DomainError(not_ready(node))
    return node


def advice(exc: DomainError, name: str, node) -> str:
    """What fixes a domain refused at `prepare`, appended to the reason: never a command that
    would refuse it the same way (convert refuses what the request itself gets wrong)."""
    from nfd_snp import snp_policy
    from nfd_snp.domain import engine, options

    command = f"nfd-snp domain convert {name}"
    if isinstance(exc, engine.NotConverted):
        return f"; run `{command}`"
    if isinstance(exc, options.PolicyRefused):
        try:
            options.check_policy(snp_policy.DEFAULT, node)
        except options.PolicyRefused:
            return ""  # not even the default: the reason names the bits this node accepts
        policy = snp_policy.format_policy(snp_policy.DEFAULT)
        return f"; convert it with a policy this node accepts: `{command} --option policy={policy}`"
    if isinstance(exc, options.OptionError):
        if exc.unknown:
            return f"; correct <snp:sev-snp> in the domain's <metadata>: `virsh edit {name}`"
        field = options.OPTIONS[exc.option]
        return (
            f"; give a valid value ({field.kind.describe}): `{command} --option {exc.option}=VALUE`"
        )
    return ""


def _check_free_asid(node) -> None:
    """Refuse the start when every SEV-ES/SNP ASID is in use: KVM would answer EBUSY
    ("failed to initialize ret=-16"). Read now, not from the cache, since it changes with
    every guest. With ciphertext hiding SNP has a range of its own that the misc cgroup
    (which counts both) cannot tell apart, so the check is left to KVM there."""
    if node.asids_shared is not True:
        return
    from nfd_snp.misc_cgroup import live_value

    capacity = live_value("misc.capacity", "sev_es")
    current = live_value("misc.current", "sev_es")
    if capacity is not None and current is not None and current >= capacity:
        raise DomainError(
            f"every SEV-ES/SNP ASID of this node is in use ({current} of {capacity}, misc "
            "cgroup): the guest cannot start until another SEV-ES or SEV-SNP guest stops"
        )


def _run(name: str, operation: str, data: bytes, out) -> int:
    from nfd_snp import xmlio
    from nfd_snp.domain import engine

    root = xmlio.parse(data, backend="stdlib" if len(data) <= LXML_ABOVE else None)
    try:
        if engine.requested_options(root) is None:
            return 0  # mentions the namespace but does not ask: not ours
    except DomainError as exc:  # it asks, with options that are wrong
        if operation != "prepare":
            raise
        raise DomainError(f"{exc}{advice(exc, name, None)}") from None
    node = _ready_node()
    if operation == "prepare":
        try:
            engine.verify(root, node)
        except DomainError as exc:
            raise DomainError(f"{exc}{advice(exc, name, node)}") from None
        _check_free_asid(node)
        return 0
    engine.rewrite(root, node)
    engine.verify(root, node)  # fail-closed: what libvirt gets must be what was asked
    out.write(xmlio.serialize(root))
    out.flush()
    return 0


def read_all(stream) -> bytes:
    """All of `stream` (libvirt must never see a closed pipe)."""
    chunks = []
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def main(argv) -> int:
    """`DOMAIN OPERATION SUB-OPERATION EXTRA` as libvirt passes them, the XML on stdin."""
    data = read_all(sys.stdin.buffer)
    if len(argv) < 3 or (argv[1], argv[2]) not in HANDLED:
        return 0
    return handle(argv[0], argv[1], data)


def handle(name: str, operation: str, data: bytes, out=None, err=None) -> int:
    """Exit status for the hook; output only for migrate/restore of SEV-SNP domains."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        return _run(name, operation, data, out)
    except NfdSnpError as exc:
        verb = VERBS.get(operation, operation)
        err.write(printable(f"nfd-snp: refusing to {verb} SEV-SNP domain '{name}': {exc}") + "\n")
    except Exception as exc:  # a bug: the SNP domain still must not start without SNP
        err.write(
            printable(
                f"nfd-snp: internal error on SEV-SNP domain '{name}' "
                f"({type(exc).__name__}: {exc}); refusing it"
            )
            + "\n"
        )
    return 1
