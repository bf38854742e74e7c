# make rpm: source tarball from the git tree (HEAD), then the SRPM and noarch RPM in dist/.
# The version is written once, as __version__ in nfd_snp/__init__.py: setup.cfg (attr:), the
# wheel, `nfd-snp --version`, the sidecar script and this spec's Version all take it from there.
VERSION := $(shell sed -n 's/^__version__ = "\([^"]*\)"$$/\1/p' nfd_snp/__init__.py)
TOPDIR := $(CURDIR)/dist/rpmbuild
# %check needs pytest, hypothesis, lxml, click and psutil for the build's python3.
# On a builder whose packages rpm does not manage (Debian), BuildRequires cannot be checked.
NODEPS := $(shell rpm -q --quiet python3 2>/dev/null || echo --nodeps)
CHECK := $(shell /usr/bin/python3 -c "import pytest, hypothesis, lxml, click, psutil" 2>/dev/null && echo --with || echo --without) check

.PHONY: rpm clean-rpm
rpm:
	rm -rf $(TOPDIR)
	mkdir -p $(TOPDIR)/SOURCES $(TOPDIR)/SPECS
	git archive --format=tar.gz --prefix=nfd-snp-$(VERSION)/ \
	  -o $(TOPDIR)/SOURCES/nfd-snp-$(VERSION).tar.gz HEAD
	cp packaging/rpm/nfd-snp.spec $(TOPDIR)/SPECS/
	rpmbuild --define "_topdir $(TOPDIR)" --define "pkg_version $(VERSION)" $(CHECK) $(NODEPS) \
	  -ba $(TOPDIR)/SPECS/nfd-snp.spec
	cp $(TOPDIR)/RPMS/noarch/nfd-snp-$(VERSION)-*.rpm $(TOPDIR)/SRPMS/nfd-snp-$(VERSION)-*.src.rpm dist/
	@ls -1 dist/*.rpm

clean-rpm:
	rm -rf dist
