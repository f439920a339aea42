# Two entry points, each works on a fresh machine with Python 3.11+, pip and make:
#   make demo   installs the gateway into .venv and starts it on a demo config with the bundled mock backend
#   make test   installs the gateway with its test extras into .venv and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 1975
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_ROOT_USER_ACTION := ignore

.PHONY: demo test install tools

# The virtual environment keeps the system Python untouched (PEP 668). Debian's python3 ships
# venv without ensurepip unless python3-venv is installed: then the venv is made without pip
# and the system's pip installs pip into it.
$(PY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  $(PYTHON) -m venv --without-pip $(VENV) && $(PYTHON) -m pip --python $(PY) install --quiet pip; }

install: $(PY) tools
	$(PY) -m pip install --quiet -e '.[test]'

# The benchmark's load generator, its nginx baseline, valgrind (instructions per request) and the
# Prometheus server that answers the dashboard's queries come from Debian's packages. Best effort:
# without them (no root, no apt) the benchmark test falls back to its built-in load generator and
# reports nginx and the instruction counts as not measured, and the dashboard's Prometheus tests skip.
tools:
	@command -v wrk >/dev/null && command -v nginx >/dev/null && command -v valgrind >/dev/null && \
	  command -v prometheus >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx-light valgrind \
	      prometheus >/dev/null 2>&1; } || \
	  echo "note: wrk, nginx, valgrind or prometheus is not installed; the benchmark and dashboard tests run without them"

demo: $(PY)
	$(PY) -m pip install --quiet -e .
	$(PY) -m modelyard.gateway demo --port $(PORT)

# One pytest process per core (at most 4), each module's tests in one of them (module fixtures
# start gateways and mocks once); ports come from a range per process (tests/support.free_port).
test: install
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile
