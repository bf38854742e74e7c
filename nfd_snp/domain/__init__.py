"""Domain rewriting: a domain that asks for SEV-SNP becomes a valid sev-snp guest.

Written against the ElementTree API that lxml.etree and xml.etree share, so one engine
serves the libvirt hook and CLI (lxml) and KubeVirt's sidecar image (standard library only).
The engine's modules (xmlio, options, engine) import nothing from nfd_snp outside this
package except `nfd_snp.errors`, so `nfd-snp kubevirt sidecar-configmap` can bundle them
into one script; `node` names the host side, the service's facts cache (nfd_snp.facts_cache).
"""
