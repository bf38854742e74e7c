"""Domain rewriting: a domain that asks for SEV-SNP becomes a valid sev-snp guest.

Written against the ElementTree API that lxml.etree and xml.etree share, so one engine
serves the libvirt hook and CLI (lxml) and KubeVirt's sidecar image (standard library only).
The modules here import nothing from nfd_snp outside this package except `nfd_snp.errors`
and `nfd_snp.xmlio`, so `nfd-snp kubevirt sidecar-configmap` can bundle them into one script.
"""
