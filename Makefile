# Two entry points, each works on a fresh machine with Python 3.11+, pip and make:
#   make demo   installs the gateway and starts it on a demo config with the bundled mock backend
#   make test   installs the gateway with its test extras and runs the whole test suite
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# No virtual environment is assumed: allow installing next to a distribution's Python
# (PEP 668) and keep pip quiet about running as root or about its own version.
export PIP_BREAK_SYSTEM_PACKAGES := 1
export PIP_ROOT_USER_ACTION := ignore
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test install tools

install: tools
	$(PIP) install --quiet -e '.[test]'

# The benchmark's load generator, its nginx baseline and valgrind (instructions per request) come
# from Debian's packages. Best effort: without them (no root, no apt) the benchmark test falls back
# to its built-in load generator and reports nginx and the instruction counts as not measured.
tools:
	@command -v wrk >/dev/null && command -v nginx >/dev/null && command -v valgrind >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx-light valgrind >/dev/null 2>&1; } || \
	  echo "note: wrk, nginx or valgrind is not installed; the benchmark test runs without them"

demo:
	$(PIP) install --quiet -e .
	$(PYTHON) -m gateway demo

test: install
	$(PYTHON) -m pytest -q
