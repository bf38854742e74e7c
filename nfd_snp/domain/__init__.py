"""Domain rewriting: a domain that asks for SEV-SNP becomes a valid sev-snp guest.

Written against the ElementTree API that lxml.etree and xml.etree share, so one engine
serves the libvirt hook (standard library), the CLI (lxml, for RelaxNG validation) and
KubeVirt's sidecar image (standard library only). `options` declares the SEV-SNP
properties; `engine` reads, writes and checks them. These two import nothing from nfd_snp
outside this package but `nfd_snp.errors`, `nfd_snp.xmlio` and `nfd_snp.snp_policy`, so
`nfd-snp kubevirt sidecar-configmap` can bundle them into one script; `node` names the host
side, the service's facts cache (nfd_snp.facts_cache).
"""
