# Gantry's commands. Run as root on Debian 12.
#   make setup   install Debian packages and the .venv (idempotent)
#   make test    setup + lint + every test tier
#   make demo    setup + a local cluster + the demo
#   make proto   regenerate gantry/v1 from proto/
#   make bench   run every benchmark (--quick)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := etcd-server etcd-client docker-registry busybox-static nftables iproute2 \
	skopeo umoci runc wrk nginx haproxy procps psmisc
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: setup test lint check-proto proto demo bench unit integration e2e clean

setup: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT): Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian starts these services on install; Gantry runs its own copies.
	@-systemctl disable --now docker-registry nginx haproxy etcd >/dev/null 2>&1 || true
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $@

proto: $(STAMP_PIP)
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. proto/gantry/v1/*.proto

check-proto: $(STAMP_PIP)
	@tmp=$$(mktemp -d); \
	$(PY) -m grpc_tools.protoc -I proto --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp proto/gantry/v1/*.proto; \
	for f in $$tmp/gantry/v1/*; do \
	  if ! cmp -s $$f gantry/v1/$$(basename $$f); then \
	    echo "gantry/v1/$$(basename $$f) is out of date with proto/: run 'make proto'"; rm -rf $$tmp; exit 1; \
	  fi; \
	done; \
	for f in gantry/v1/*_pb2*.py*; do \
	  test -e $$tmp/gantry/v1/$$(basename $$f) || { echo "$$f has no .proto source: remove it"; rm -rf $$tmp; exit 1; }; \
	done; \
	rm -rf $$tmp; echo "generated code is up to date"

lint: setup check-proto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy gantry controller agent proxy

test: setup lint
	$(VENV)/bin/pytest -p no:cacheprovider tests

unit: setup
	$(VENV)/bin/pytest -m unit tests

integration: setup
	$(VENV)/bin/pytest -m integration tests

e2e: setup
	$(VENV)/bin/pytest -m e2e tests

demo: setup
	$(PY) -m gantry.demo

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
