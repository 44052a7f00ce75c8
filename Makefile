# Build and install wsbridge the way a packager does:
#
#   make                                   # cargo build --release --locked
#   sudo make install                      # /usr/local/bin, /usr/local/lib/systemd/system, /etc/wsbridge
#   make install PREFIX=/usr DESTDIR=pkg   # staged, for a package
#   make check-unit                        # systemd-analyze verify (service and socket) + security on a staged install
#
# `install` never overwrites an existing /etc/wsbridge/wsbridge.toml, and does not run cargo
# when the binary is already built (so `sudo make install` needs no Rust toolchain for root).
# The unit's /usr/bin and /etc/wsbridge paths are rewritten to match BINDIR and SYSCONFDIR.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
DESTDIR    ?=

CARGO      ?= cargo
PROFILE    ?= release
# The binary to install; CI installs the debug build it already has.
BIN        ?= target/$(PROFILE)/wsbridge

CONFDIR    := $(SYSCONFDIR)/wsbridge
INSTALL    ?= install

.PHONY: all build install uninstall check-unit clean-stage

all: build

build:
	$(CARGO) build --locked --profile $(PROFILE)

# Built only when missing: `sudo make install` after `make` must not need cargo.
$(BIN):
	$(CARGO) build --locked --profile $(PROFILE)

install: $(BIN)
	$(INSTALL) -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(CONFDIR)
	$(INSTALL) -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/wsbridge
	sed -e 's|/usr/bin/wsbridge|$(BINDIR)/wsbridge|g' -e 's|/etc/wsbridge/|$(CONFDIR)/|g' \
		systemd/wsbridge.service > $(DESTDIR)$(UNITDIR)/wsbridge.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/wsbridge.service
	$(INSTALL) -m 0644 systemd/wsbridge.socket $(DESTDIR)$(UNITDIR)/wsbridge.socket
	$(INSTALL) -m 0644 docs/wsbridge.1 $(DESTDIR)$(MANDIR)/man1/wsbridge.1
	@if [ -e $(DESTDIR)$(CONFDIR)/wsbridge.toml ]; then \
		echo "keeping the existing $(DESTDIR)$(CONFDIR)/wsbridge.toml"; \
	else \
		$(INSTALL) -m 0644 config/wsbridge.toml $(DESTDIR)$(CONFDIR)/wsbridge.toml; \
		echo "installed $(DESTDIR)$(CONFDIR)/wsbridge.toml: edit it, then run wsbridge check"; \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; \
		echo "next: systemctl enable --now wsbridge"; \
	fi

# Leaves the config (and /etc/wsbridge/env) where they are, as package removal does.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wsbridge $(DESTDIR)$(UNITDIR)/wsbridge.service \
		$(DESTDIR)$(UNITDIR)/wsbridge.socket \
		$(DESTDIR)$(MANDIR)/man1/wsbridge.1

# `systemd-analyze verify` checks that ExecStart's binary exists, so the unit is verified
# inside a staged root (--root) holding `make install PREFIX=/usr` and the host's own
# systemd units (for sysinit.target and friends). The staged unit must be byte for byte
# systemd/wsbridge.service. MANPATH lets verify find the man page named in Documentation=
# (checked when man(1) is installed).
# Warnings fail the check too, and so does an exposure score above SECURITY_THRESHOLD/10.
STAGE ?= target/unit-stage
SECURITY_THRESHOLD ?= 15

check-unit: $(BIN)
	rm -rf $(STAGE)
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(abspath $(STAGE)) BIN=$(BIN)
	cmp systemd/wsbridge.service $(STAGE)/usr/lib/systemd/system/wsbridge.service
	cmp systemd/wsbridge.socket $(STAGE)/usr/lib/systemd/system/wsbridge.socket
	mkdir -p $(STAGE)/etc/systemd/system
	cp -an /usr/lib/systemd/system/. $(STAGE)/usr/lib/systemd/system/
	MANPATH=$(abspath $(STAGE))/usr/share/man systemd-analyze verify --root=$(abspath $(STAGE)) \
		$$(command -v man >/dev/null || echo --man=no) \
		$(abspath $(STAGE))/usr/lib/systemd/system/wsbridge.service \
		$(abspath $(STAGE))/usr/lib/systemd/system/wsbridge.socket > $(STAGE)/verify.txt 2>&1 \
		|| { cat $(STAGE)/verify.txt; exit 1; }
	@# An unknown or misspelt directive is only a warning to systemd: fail on any output.
	@if [ -s $(STAGE)/verify.txt ]; then cat $(STAGE)/verify.txt; \
		echo "systemd-analyze verify warned about systemd/wsbridge.service or .socket"; exit 1; fi
	systemd-analyze security --offline=true --threshold=$(SECURITY_THRESHOLD) \
		systemd/wsbridge.service > $(STAGE)/security.txt || { cat $(STAGE)/security.txt; exit 1; }
	tail -n 1 $(STAGE)/security.txt
	@echo "systemd/wsbridge.service and wsbridge.socket: verify passed"

clean-stage:
	rm -rf $(STAGE)
