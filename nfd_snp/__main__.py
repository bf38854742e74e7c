"""`python -m nfd_snp` runs the CLI."""

from nfd_snp.cli import main

main()
