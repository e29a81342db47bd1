# walden: every entry point. `make run` builds and boots the appliance;
# `make test` runs every test level (DESIGN.md section 6).

SHELL := /bin/bash
CARGO ?= cargo
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
export WALDEN_VERSION ?= $(VERSION)

# Debian packages needed to build and test (ipxe: its ipxe.iso is the real
# ISO a guest boots from its CD-ROM in the guests scenarios; gcc: the stub guest of the
# image scenarios, qemu-tests/stub; samba: the smbd QEMU starts for
# `-netdev user,smb=` in the CIFS scenario; xfsprogs: XFS data disks; the image's build deps are listed
# in image/build-deps.txt so image/build.sh can install them on its own too).
TEST_DEPS := gcc ipxe util-linux iproute2 iputils-ping procps e2fsprogs xfsprogs qemu-system-x86 qemu-utils ovmf libvirt-dev pkgconf libvirt-clients libxml2-utils openssh-client samba

.PHONY: all deps build test test-unit test-privileged test-qemu lint image run bench clean

all: build

## deps: install build and test dependencies (idempotent; apt only when missing)
deps:
	@pkgs="$(TEST_DEPS) $$(grep -v '^#' image/build-deps.txt 2>/dev/null | tr '\n' ' ')"; \
	missing() { for p in $$pkgs; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done; }; \
	m=$$(missing); \
	if [ -z "$$m" ]; then echo "deps: all Debian packages present"; exit 0; fi; \
	echo "deps: installing $$m"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$m || exit 1; \
	m=$$(missing); \
	if [ -n "$$m" ]; then \
		echo "deps: the install removed $$m (a conflicting version: e.g. a backported qemu-utils and bookworm's qemu-system-x86); installing bookworm's"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$m || exit 1; \
	fi; \
	m=$$(missing); \
	if [ -n "$$m" ]; then echo "deps: still missing after install: $$m" >&2; exit 1; fi
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true

## build: the walden binary (release); installs the build dependencies
## first, so `make run` works as the first command on a fresh machine
build: deps
	image/heal-virt-sys.sh
	$(CARGO) build --release --bin walden

## lint: formatting and clippy, part of the tests
lint: deps
	image/heal-virt-sys.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --bin walden --no-default-features -- -D warnings

## test: every level, fastest first
test: deps lint test-unit test-qemu

# Levels 1 and 2: pure unit tests and privileged tests (namespaces, temp
# trees, real processes). Privileged tests refuse to be skipped in CI.
# The bench runner's own parsing and report tests run here too.
test-unit: deps
	image/heal-virt-sys.sh
	WALDEN_REQUIRE_PRIVILEGED=$${WALDEN_REQUIRE_PRIVILEGED:-1} $(CARGO) test --bin walden --tests
	$(CARGO) test -p walden-bench

# Level 3: the real image booted under QEMU, scenario by scenario
# (qemu-tests/scenarios.sh: per-scenario times in build/qemu-tests/timings.tsv).
test-qemu: image
	CARGO=$(CARGO) qemu-tests/scenarios.sh

## image: the bootable ISO and USB image in build/
image: build
	@mkdir -p build
	flock build/.image.lock image/build.sh

## run: build if needed and boot the USB image headless on this terminal
run: image
	image/run.sh

## bench: walden vs a systemd + libvirt Debian baseline -> bench/RESULTS.md
## (bench/README.md; not part of `make test`; BENCH_RUNS=1 for a quick check)
bench: image
	BENCH_COMMAND="$(strip make bench $(foreach v,BENCH_RUNS BENCH_RUNS_4 BENCH_APPLY_RUNS,$(if $($(v)),$(v)=$($(v)))))" \
		$(CARGO) run --quiet -p walden-bench

clean:
	rm -rf build
