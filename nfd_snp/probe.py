"""One probe: read every source once from one host into `HostFacts`, and its report."""

from __future__ import annotations

import os

from nfd_snp.host import Host, open_host
from nfd_snp.model import HostFacts, TcbLayout
from nfd_snp.sources import cgroup, cpuid, domcaps, firmware, guests, kernel, kvm, msr, psp


def probe(host: Host) -> HostFacts:
    cpu = cpuid.read(host)
    kern = kernel.read(host)
    # The TCB layout depends on the CPU family; without the CPUID device, cpuinfo tells it.
    family = cpu.family if cpu.family is not None else kern.family
    return HostFacts(
        root=str(host.root),
        snapshot=host.snapshot,
        cpu=cpu,
        msr=msr.read(host),
        kernel=kern,
        kvm=kvm.read(host),
        psp=psp.read(host, TcbLayout.for_family(family)),
        asids=cgroup.read(host),
        domcaps=domcaps.read(host),
        firmware=firmware.read(host),
        guests=guests.read(host),
    )


def probe_report(
    host_root: "os.PathLike | str" = "/", *, libvirt: str = "auto", libvirt_timeout: float = 10.0
):
    """Probe `host_root` (live or snapshot) and evaluate the readiness report.

    libvirt: "auto" asks host libvirt when a daemon runs, "off" never asks, "required" makes
    a node without host libvirt not ready.
    """
    from nfd_snp.checks import evaluate

    with open_host(host_root, libvirt=libvirt != "off", libvirt_timeout=libvirt_timeout) as host:
        facts = probe(host)
    return evaluate(facts, require_libvirt=libvirt == "required")
