"""One probe: read every source once from one host into `HostFacts`."""

from __future__ import annotations

from nfd_snp.host import Host
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
