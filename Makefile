# spire-pqc developer entry points. Every target that needs Python creates .venv first, so a fresh
# clone needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SPIRE_PQC_CACHE ?= $(HOME)/.cache/spire-pqc
# Where `make liboqs` installs liboqs; liboqs-python and the liboqs backend find it through this.
export OQS_INSTALL_PATH ?= $(SPIRE_PQC_CACHE)/liboqs-0.16.0
PROTO_SRC := $(shell find proto -name '*.proto' 2>/dev/null)

.PHONY: venv demo test test-unit test-packaging lint config-docs proto proto-check bench spire openssl postgres liboqs promtool systemd-tools tools dist clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The external programs the tests drive: SPIRE built from its Go module, OpenSSL >= 3.5 from Debian,
## liboqs 0.16.0 built from the tarball in third_party/liboqs/ (the liboqs backend).
spire:
	bash scripts/build-spire.sh

openssl:
	bash scripts/install-openssl.sh

## PostgreSQL 15 (Debian's postgresql-15) for the ledger and SPIRE HA tests: private clusters only.
postgres:
	bash scripts/install-postgres.sh

## promtool (checks and unit-tests the alert rules) unpacked from Debian's prometheus package; starts nothing.
promtool:
	bash scripts/install-promtool.sh

## systemd-analyze / systemd-sysusers check the units in packaging/systemd (Debian's systemd package; it
## starts no daemon where systemd is not PID 1).
systemd-tools:
	@command -v systemd-analyze >/dev/null && command -v systemd-sysusers >/dev/null || \
		{ apt-get -q update && apt-get install -y -q --no-install-recommends systemd; }

## liboqs 0.16.0 built from the vendored release tarball (third_party/liboqs), for the liboqs backend.
liboqs:
	bash scripts/build-liboqs.sh

tools: spire openssl postgres liboqs promtool systemd-tools

demo: venv
	$(VENV)/bin/spire-pqc demo

## Every test: unit, vectors, property, interop (OpenSSL, py-spiffe, go-spiffe) and real-SPIRE integration.
test: venv tools proto-check
	$(PY) -m pytest -q -ra

test-unit: venv liboqs
	$(PY) -m pytest -q -ra tests/unit tests/vectors

## The wheel, sdist, systemd units, Kubernetes manifests, container recipes and the alerting contract.
test-packaging: venv tools
	$(PY) -m pytest -q -ra tests/packaging

## sdist and wheel in dist/ (the standard build frontend, PEP 517).
dist: venv
	$(PY) -m build --outdir dist .

lint: venv proto-check
	$(VENV)/bin/ruff check spire_pqc tests plugins examples scripts
	$(VENV)/bin/ruff format --check spire_pqc tests plugins examples scripts
	$(VENV)/bin/mypy spire_pqc tests examples
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_pq_imports.py
	$(PY) scripts/gen_config_docs.py --check

## The configuration reference (docs/configuration.md, README and plugin README key tables) from the models.
config-docs: venv
	$(PY) scripts/gen_config_docs.py

proto: venv
	$(PY) scripts/gen_proto.py

proto-check: venv
	$(PY) scripts/gen_proto.py --check

## Every benchmark (each compares against a baseline measured in the same run; about 45 minutes;
## `bench soak` runs its attackers as other uids, so it needs root).
bench: venv tools
	$(VENV)/bin/spire-pqc bench crypto
	$(VENV)/bin/spire-pqc bench ca --expiring 100000
	$(VENV)/bin/spire-pqc bench channel
	$(VENV)/bin/spire-pqc bench tunnel
	$(VENV)/bin/spire-pqc bench agent
	$(VENV)/bin/spire-pqc bench agent-vs-spire
	$(VENV)/bin/spire-pqc bench composer
	$(VENV)/bin/spire-pqc bench ledger
	$(VENV)/bin/spire-pqc bench rotation
	$(VENV)/bin/spire-pqc bench soak
	$(VENV)/bin/spire-pqc bench jwt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
