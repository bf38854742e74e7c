# make rpm: source tarball from the git tree (HEAD), then the SRPM and the noarch RPMs
# (nfd-snp and nfd-snp-libvirt) in dist/.
# The version is written once, as __version__ in nfd_snp/__init__.py: setup.cfg (attr:), the
# wheel, `nfd-snp --version`, the sidecar script and this spec's Version all take it from there.
VERSION := $(shell sed -n 's/^__version__ = "\([^"]*\)"$$/\1/p' nfd_snp/__init__.py)
TOPDIR := $(CURDIR)/dist/rpmbuild
# %check runs the test suite with the builder's python3, which needs pytest, hypothesis, lxml,
# click and venv. On a builder whose packages rpm does not manage (Debian),
# BuildRequires cannot be checked.
NODEPS := $(shell rpm -q --quiet python3 2>/dev/null || echo --nodeps)
CHECK := $(shell /usr/bin/python3 -c "import pytest, hypothesis, lxml, click, venv" 2>/dev/null && echo --with || echo --without) check

.PHONY: rpm clean-rpm version
version:
	@echo $(VERSION)

rpm:
	@test -n "$(VERSION)" || { echo "make rpm: no __version__ in nfd_snp/__init__.py" >&2; exit 1; }
	rm -rf $(TOPDIR)
	mkdir -p $(TOPDIR)/SOURCES $(TOPDIR)/SPECS
	git archive --format=tar.gz --prefix=nfd-snp-$(VERSION)/ \
	  -o $(TOPDIR)/SOURCES/nfd-snp-$(VERSION).tar.gz HEAD
	cp packaging/rpm/nfd-snp.spec $(TOPDIR)/SPECS/
	rpmbuild --define "_topdir $(TOPDIR)" --define "pkg_version $(VERSION)" $(CHECK) $(NODEPS) \
	  -ba $(TOPDIR)/SPECS/nfd-snp.spec
	cp $(TOPDIR)/RPMS/noarch/nfd-snp-$(VERSION)-*.rpm \
	  $(TOPDIR)/RPMS/noarch/nfd-snp-libvirt-$(VERSION)-*.rpm \
	  $(TOPDIR)/SRPMS/nfd-snp-$(VERSION)-*.src.rpm dist/
	@ls -1 dist/*.rpm

clean-rpm:
	rm -rf dist
