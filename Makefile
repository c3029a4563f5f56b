# Thin wrappers: each recipe is what you would type yourself. Run as root on a
# Debian/Ubuntu machine; `make up` installs what is missing first.
#
#   make up         hosts from topology.yml as Vagrant machines, provisioned, smoke-tested,
#                   then one pipeline run (upload -> train -> deploy) with its metrics
#   make up TOPOLOGY=ha   the same with the highly available topology (topologies/ha.yml);
#                   TOPOLOGY=ha works with every target below that talks to the hosts
#   make info       the Airflow UI's address, user and generated password
#   make ssh HOST=control   a shell on one machine (Vagrant with the docker shim on PATH)
#   make down       destroy them (and the network Vagrant made for them)
#   make r3e        the R3E experiments against the hosts of `make up`: every fault and bad
#                   input of experiments/, 20 repeated runs, defaults vs tuned, the robustness
#                   curve; writes reports/<timestamp>/report.html (R3E_ARGS adds options)
#   make bench      the benchmarks: ingest memory and speed (local), then elasticity against
#                   the hosts of `make up` (BENCH_INVENTORY=<inventory> for others); their
#                   figures go into the latest R3E report's elasticity section
#   make readme     the README's R3E and benchmark figures, written from the run in results/
#                   (r3e publish reports/<timestamp> puts one there; r3e readme --check compares)
#   make test       all tests: lint, unit, dags, molecule, molecule-ha (each stage prints its
#                   duration)
#   make lint       ansible-lint (production profile), yamllint, ruff, vagrant validate
#   make unit       the Python package's unit tests
#   make dags       the DAG files as Airflow loads them (in .venv-airflow): tasks, edges, retries
#                   and timeouts, no import error or warning
#   make molecule   the whole stack in containers: converge, idempotence, verify
#   make molecule-ha  the same for topologies/ha.yml, whose verify loses whole hosts during
#                   training runs (both scenarios use worker-1/worker-2 as container names:
#                   `make test` runs them one after the other, never run them at once)
#   make validate   check the Vagrantfile for every provider, offline
#   make venv       the controller's tools (Ansible, Molecule, linters) in .venv
#   make airflow-venv  the Airflow hosts' venv (their lock and packages) in .venv-airflow
#                   (apart from .venv: Airflow's pins and Ansible's tools do not mix)
#
# PROVIDER=libvirt or PROVIDER=virtualbox gives real VMs instead of containers.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PROVIDER ?= docker
# TOPOLOGY=ha: the highly available shape (topologies/ha.yml) instead of topology.yml. Each
# topology keeps its own Vagrant machines, network and UI port, so both can be up at once.
TOPOLOGY ?= default
ifeq ($(TOPOLOGY),default)
TOPOLOGY_FILE := topology.yml
VAGRANT_DOTFILE := .vagrant
R3E_SUBNET ?= 192.168.56
R3E_UI_PORT ?= 8080
else
TOPOLOGY_FILE := topologies/$(TOPOLOGY).yml
VAGRANT_DOTFILE := .vagrant-$(TOPOLOGY)
R3E_SUBNET ?= 192.168.57
R3E_UI_PORT ?= 8081
endif
ifeq ($(wildcard $(TOPOLOGY_FILE)),)
$(error TOPOLOGY=$(TOPOLOGY): there is no $(TOPOLOGY_FILE); the topologies are default and $(patsubst topologies/%.yml,%,$(wildcard topologies/*.yml)))
endif
# Same defaults as the Vagrantfile (which reads the same environment variables).
R3E_UI_BIND ?= 127.0.0.1
export R3E_TOPOLOGY := $(TOPOLOGY_FILE)
export VAGRANT_DOTFILE_PATH := $(CURDIR)/$(VAGRANT_DOTFILE)
export R3E_SUBNET R3E_UI_BIND R3E_UI_PORT
VAGRANT_INVENTORY := $(VAGRANT_DOTFILE)/provisioners/ansible/inventory/vagrant_ansible_inventory
START := $(shell date +%s)

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Vagrant's docker provider runs the `docker` command itself. Where no Docker engine
# answers (`docker info` fails) and podman is installed, tools/podman-docker goes first
# on PATH: a `docker` command that runs podman. Decided when each command runs, so it
# holds right after `make deps` installed podman.
WITH_DOCKER = docker info >/dev/null 2>&1 || ! command -v podman >/dev/null || export PATH="$(CURDIR)/tools/podman-docker:$$PATH";
VAGRANT = $(WITH_DOCKER) VAGRANT_DEFAULT_PROVIDER=$(PROVIDER) vagrant

.PHONY: help deps venv airflow-venv image up provision login info ssh down r3e bench readme validate test lint unit dags molecule molecule-ha

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

# apt packages: vagrant, podman, runc, debootstrap, python3-venv ... (quiet when present)
deps:
	@tools/install-host-deps.sh

# The controller's tools, then this package with its pipeline libraries at the versions
# the Airflow hosts run (the airflow role's lock).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml roles/airflow/files/constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --constraint roles/airflow/files/constraints.txt -e ".[pipeline,services,experiments]"
	touch $@

# The Airflow hosts' venv: the same lock and packages (the airflow role's airflow_pip_packages
# and group_vars/airflow.yml's airflow_extra_pip_packages; tests/dags checks that this list
# still matches them) and this package without extras, as the hosts get its wheel; and pytest.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_LOCK := roles/airflow/files/constraints.txt
AIRFLOW_PACKAGES := "apache-airflow[celery,postgres,amazon]==3.3.2" apache-airflow-providers-common-io \
	"apache-airflow-providers-amazon[s3fs]" pandas pyarrow "celery<5.7" prophet scikit-learn pandera
airflow-venv: $(AIRFLOW_VENV)/.installed
$(AIRFLOW_VENV)/.installed: pyproject.toml $(AIRFLOW_LOCK) roles/airflow/defaults/main.yml playbooks/group_vars/airflow.yml
	@start=$$(date +%s); set -ex; \
	python3 -m venv $(AIRFLOW_VENV); \
	$(AIRFLOW_VENV)/bin/pip install -q --upgrade pip; \
	$(AIRFLOW_VENV)/bin/pip install -q --constraint $(AIRFLOW_LOCK) $(AIRFLOW_PACKAGES) -e ".[test]"; \
	touch $@; { set +x; } 2>/dev/null; echo "== $(AIRFLOW_VENV) built: $$(( $$(date +%s) - start )) s"

# The base image of the container hosts (skipped when it exists). It is built with
# podman; a real Docker engine gets a copy.
image:
ifeq ($(PROVIDER),docker)
	images/build.sh
	@if docker info >/dev/null 2>&1 && ! docker image inspect localhost/r3e-testbed/debian12:latest >/dev/null 2>&1; then \
	  podman save localhost/r3e-testbed/debian12:latest | docker load; fi
endif

# Machines come up in parallel, then one Ansible run (playbooks/site.yml) covers all hosts;
# the smoke test and one run of the IoT pipeline (playbooks/pipeline.yml) close it.
up: deps venv image
	$(VAGRANT) up --provider=$(PROVIDER) --no-provision
	$(VAGRANT) provision
	ansible-playbook -i $(VAGRANT_INVENTORY) playbooks/smoke.yml
	ansible-playbook -i $(VAGRANT_INVENTORY) playbooks/pipeline.yml
	@$(MAKE) --no-print-directory login
	@echo "make up took $$(( $$(date +%s) - $(START) )) s"

provision:
	$(VAGRANT) provision

# Where the UI is and how to log in. The password is generated per deployment and lives in
# .secrets/<deployment>/secrets.yml; `make up` says where, `make info` shows it on request.
SECRETS_FILE = .secrets/$$($(VENV)/bin/python -c 'import yaml; print(yaml.safe_load(open("$(TOPOLOGY_FILE)"))["all"]["vars"]["deployment_name"])')/secrets.yml
login:
	@echo "Airflow UI: http://$(R3E_UI_BIND):$(R3E_UI_PORT)/  user: admin"
	@echo "password:   airflow_admin_password in $(SECRETS_FILE) (make info shows it)"

info:
	@secrets=$(SECRETS_FILE); \
	echo "Airflow UI: http://$(R3E_UI_BIND):$(R3E_UI_PORT)/  user: admin"; \
	if [ -f $$secrets ]; then \
	  echo "password:   $$($(VENV)/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["airflow_admin_password"])' $$secrets)  (airflow_admin_password in $$secrets)"; \
	else echo "password:   airflow_admin_password in $$secrets (written by the first provisioning)"; fi

# A shell on one machine of the testbed, e.g. make ssh HOST=control. Vagrant by hand works
# too once the docker shim is first on PATH: export PATH="$$PWD/tools/podman-docker:$$PATH"
# (then vagrant ssh control, vagrant status, ...).
ssh:
	@test -n "$(HOST)" || { echo "usage: make ssh HOST=<host of topology.yml>, e.g. HOST=control" >&2; exit 2; }
	@$(VAGRANT) ssh $(HOST)

# Vagrant removes its networks with the last machine on them; the rm covers a network
# left behind by an interrupted run (only ours: its name carries our subnet).
down:
	$(VAGRANT) destroy -f
ifeq ($(PROVIDER),docker)
	@$(WITH_DOCKER) net="vagrant_network_$(R3E_SUBNET).0/24"; \
	if docker network inspect "$$net" >/dev/null 2>&1; then docker network rm "$$net"; fi
endif

# Any inventory works the same: r3e run -i inventories/<name>/hosts.yml (r3e --help).
r3e: venv
	$(WITH_DOCKER) r3e run -i $(VAGRANT_INVENTORY) $(R3E_ARGS)

# Figures, not pass/fail tests (benchmarks/README.md says what each one measures).
# BARE_SECONDS=<s>: the seconds `make up` took on a fresh clone (/usr/bin/time -v make up),
# reported beside the other figures against its goal.
BENCH_INVENTORY ?= $(VAGRANT_INVENTORY)
bench: venv
	python benchmarks/ingest.py --json reports/bench-ingest.json
	$(WITH_DOCKER) python benchmarks/elasticity.py -i $(BENCH_INVENTORY) --json reports/bench-elasticity.json \
	  $(if $(BARE_SECONDS),--bare-seconds $(BARE_SECONDS))
	@latest=$$(ls -td reports/*/results.json 2>/dev/null | head -1); \
	if [ -n "$$latest" ]; then r3e report "$$latest" --benchmark reports/bench-ingest.json \
	  --benchmark reports/bench-elasticity.json; else echo "no R3E report yet: make r3e, then make bench"; fi

# Every marked figure of the README from results/ (r3e readme --help); nothing else is touched.
readme: venv
	r3e readme

# Offline checks. `-p` skips provider settings; libvirt's are checked through the
# vagrant-libvirt plugin (no libvirtd needed). Vagrant refuses to look at VirtualBox
# settings unless `VBoxManage --version` answers: where VirtualBox is not installed, a
# stub that only answers that lets Vagrant check the settings' names and values. It is
# no test that VirtualBox can run the machines.
validate:
	vagrant validate -p
	@for topology in topologies/*.yml; do echo "R3E_TOPOLOGY=$$topology vagrant validate -p"; \
	  R3E_TOPOLOGY=$$topology vagrant validate -p || exit 1; done
	VAGRANT_DEFAULT_PROVIDER=libvirt vagrant validate
	@if command -v VBoxManage >/dev/null; then VAGRANT_DEFAULT_PROVIDER=virtualbox vagrant validate; else \
	  stub=$$(mktemp -d) && printf '#!/bin/sh\necho 7.0.0r0\n' >$$stub/VBoxManage && chmod +x $$stub/VBoxManage && \
	  echo "VAGRANT_DEFAULT_PROVIDER=virtualbox vagrant validate  (VBoxManage stubbed: settings only)" && \
	  PATH=$$stub:$$PATH VAGRANT_DEFAULT_PROVIDER=virtualbox vagrant validate; rc=$$?; rm -rf $$stub; exit $$rc; fi

# --- Tests ----------------------------------------------------------------------------
# Each stage prints how long it took; .ci/run calls `make test`.
STAGE = @start=$$(date +%s); trap 'echo "== stage $@: $$(( $$(date +%s) - start )) s"' EXIT;

test: lint unit dags molecule molecule-ha

lint: venv
	$(STAGE) set -e; \
	ansible-lint; \
	yamllint --strict .; \
	ruff check .; \
	ruff format --check .; \
	$(MAKE) --no-print-directory validate

unit: venv
	$(STAGE) pytest tests

# R3E_REQUIRE_AIRFLOW=1: where Airflow is missing, tests/dags fails instead of being left out.
dags: airflow-venv
	$(STAGE) R3E_REQUIRE_AIRFLOW=1 $(AIRFLOW_VENV)/bin/pytest tests/dags

# The containers need the same podman settings as Vagrant's (images/containers.conf).
molecule: venv
	$(STAGE) CONTAINERS_CONF=$(CURDIR)/images/containers.conf molecule test

molecule-ha: venv
	$(STAGE) CONTAINERS_CONF=$(CURDIR)/images/containers.conf molecule test -s ha
