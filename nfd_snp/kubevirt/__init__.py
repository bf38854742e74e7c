"""Everything nfd-snp does for KubeVirt, one module per concern.

`sidecar` is the onDefineDomain hook sidecar and reads a VMI's SEV-SNP request,
`sidecar_bundle` builds its one-file script for the stock sidecar-shim image, `manifests`
holds the instancetypes and preference nfd-snp ships, and `check_vm` checks VM manifests
offline. This package's own __init__ is bundled into the sidecar script too: standard
library only.
"""
