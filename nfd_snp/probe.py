"""One probe: read every source once from one host into `HostFacts`, and its report.

`probe_report` is the one entry point of the commands: probe, then evaluate the checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional

from nfd_snp.errors import InputError
from nfd_snp.host import Host, Recording, open_host
from nfd_snp.model import HostFacts, TcbLayout
from nfd_snp.sources import cgroup, cpuid, domcaps, firmware, guests, kernel, kvm, msr, psp

if TYPE_CHECKING:
    from nfd_snp.checks import Report
    from nfd_snp.config import Config


def probe(host: Host) -> HostFacts:
    cpu = cpuid.read(host)
    kern = kernel.read(host)
    # The TCB layout depends on the CPU family; without the CPUID device, cpuinfo tells it.
    family = cpu.family if cpu.family is not None else kern.family
    kvm_facts = kvm.read(host)
    snp_query = not psp.snp_status_has_side_effects(kern, kvm_facts)
    return HostFacts(
        root=str(host.root),
        snapshot=host.snapshot,
        cpu=cpu,
        msr=msr.read(host),
        kernel=kern,
        kvm=kvm_facts,
        psp=psp.read(host, TcbLayout.for_family(family), snp_query=snp_query),
        asids=cgroup.read(host),
        domcaps=domcaps.read(host),
        firmware=firmware.read(host),
        guests=guests.read(host),
    )


class Probe(NamedTuple):
    """One probe's evaluated report and, for `capture`, what it read."""

    report: "Report"
    recording: Optional[Recording]


def probe_report(config: "Config", *, record: bool = False) -> Probe:
    """Probe `config.host_root` (live or snapshot) and evaluate it: `check`, `features`,
    `run` and `capture` all come through here.

    `config.libvirt`: "auto" asks host libvirt when a daemon runs, "off" never asks,
    "required" makes a node without host libvirt not ready. `record` keeps every input a
    live probe reads (a snapshot is not recorded again: copy it instead).
    """
    from nfd_snp.checks import evaluate

    with open_host(
        config.host_root,
        libvirt=config.libvirt != "off",
        libvirt_timeout=config.libvirt_timeout,
        record=record,
    ) as host:
        if record and host.snapshot:
            raise InputError(f"{config.host_root} is a snapshot already; copy it instead")
        facts = probe(host)
        recording = host.recording if record else None
    return Probe(evaluate(facts, require_libvirt=config.libvirt == "required"), recording)
