# Convenience targets over cargo and the scripts (the scripts are the source of truth).
#   make                      cargo build --release --lib
#   make install PREFIX=/opt/attnsketch [LIBDIR=lib] [DESTDIR=/stage]
#   make uninstall PREFIX=...
#   make package-test         install into a temp prefix, build C (pkg-config) and C++ (CMake) consumers
#   make test                 the whole suite (scripts/test.sh)
PREFIX ?= /usr/local
LIBDIR ?= lib
DESTDIR ?=

.PHONY: all install uninstall package-test test
all:
	cargo build --release --lib

install:
	bash scripts/install.sh --prefix "$(PREFIX)" --libdir "$(LIBDIR)" $(if $(DESTDIR),--destdir "$(DESTDIR)")

uninstall:
	bash scripts/install.sh --prefix "$(PREFIX)" --libdir "$(LIBDIR)" $(if $(DESTDIR),--destdir "$(DESTDIR)") --uninstall

package-test:
	bash scripts/package-test.sh

test:
	bash scripts/test.sh
