"""nfd-snp: AMD SEV-SNP node enablement for KubeVirt and libvirt.

The package probes a node's SEV stack into a typed host model (`nfd_snp.model`), decides
readiness with a named check tree (`nfd_snp.checks`) and renders views of that model.
"""

__version__ = "0.1.0"
