"""One probe: read every source once from one host into `HostFacts`, and its report."""

from __future__ import annotations

import os

from nfd_snp.host import Host, open_host
from nfd_snp.model import HostFacts, generation_of
from nfd_snp.sources import cgroup, cpuid, domcaps, firmware, guests, kernel, kvm, msr, psp


def probe(host: Host) -> HostFacts:
    cpu = cpuid.read(host)
    kern = kernel.read(host)
    # TCB layout depends on the generation; without the CPUID device, cpuinfo tells it.
    generation = cpu.generation
    if cpu.vendor is None and kern.vendor_id == "AuthenticAMD":
        generation = generation_of(kern.family, kern.model)
    return HostFacts(
        root=str(host.root),
        snapshot=host.snapshot,
        cpu=cpu,
        msr=msr.read(host),
        kernel=kern,
        kvm=kvm.read(host),
        psp=psp.read(host, generation),
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
