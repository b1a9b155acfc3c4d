# Slidebank: two set-up commands on a fresh Debian machine with Python 3.11.
#   make demo   installs into .venv, creates ./slidebank-data with a sample slide, and serves
#               it at http://127.0.0.1:8000
#   make test   installs the dev extras and runs ruff, mypy, import-linter and pytest

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SLIDES ?=
# pytest processes for `make test`: one per logical CPU by default; 0 runs the suite in one process.
PYTEST_WORKERS ?= logical

.PHONY: demo test install install-dev lint typecheck layers pytest clean benchmark-ingest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/slidebank demo $(if $(SLIDES),--slides "$(SLIDES)")
	$(BIN)/slidebank serve --host 127.0.0.1 --port 8000

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install-dev
	$(BIN)/mypy

layers: install-dev
	$(BIN)/lint-imports

# Tests marked alone (a real browser's timing, kill loops) then run by themselves: beside other
# tests on two cores they failed now and then. Both parts run; either failing fails the target.
pytest: install-dev
	$(BIN)/pytest --numprocesses $(PYTEST_WORKERS) -m 'not alone'; spread=$$?; \
	$(BIN)/pytest -m alone; alone=$$?; \
	test $$spread -eq 0 && test $$alone -eq 0

test: lint typecheck layers pytest

# The web interface's browser code: OpenSeadragon from npm, pinned by package-lock.json,
# into src/slidebank/web/static/node_modules (git-ignored). npm keeps the package's file
# times, hence the touch.
STATIC := src/slidebank/web/static
OPENSEADRAGON := $(STATIC)/node_modules/openseadragon/build/openseadragon/openseadragon.min.js

.PHONY: web-assets browser

$(OPENSEADRAGON): $(STATIC)/package.json $(STATIC)/package-lock.json
	command -v npm >/dev/null || (apt-get update && apt-get install -y npm)
	npm ci --prefix $(STATIC) --no-audit --no-fund
	touch $@

web-assets: $(OPENSEADRAGON)

install: web-assets

install-dev: web-assets

# The OpenID Connect provider the access tests sign in against: node-oidc-provider from npm,
# pinned by package-lock.json, into tests/access/oidc_provider/node_modules (git-ignored).
OIDC_PROVIDER_DIR := tests/access/oidc_provider
OIDC_PROVIDER := $(OIDC_PROVIDER_DIR)/node_modules/oidc-provider/package.json

.PHONY: test-oidc-provider

$(OIDC_PROVIDER): $(OIDC_PROVIDER_DIR)/package.json $(OIDC_PROVIDER_DIR)/package-lock.json
	command -v npm >/dev/null || (apt-get update && apt-get install -y npm)
	npm ci --prefix $(OIDC_PROVIDER_DIR) --no-audit --no-fund
	touch $@

test-oidc-provider: $(OIDC_PROVIDER)

install-dev: test-oidc-provider

# Chromium from Debian for the browser tests (Playwright drives it; never `playwright install`).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

pytest: browser

benchmark-ingest: install-dev
	$(BIN)/python benchmarks/ingest.py

.PHONY: benchmark-tiles
benchmark-tiles: install-dev
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python benchmarks/tiles.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache

# libturbojpeg (the TurboJPEG API of libjpeg-turbo): opentile, under wsidicomizer, uses it to
# pass SVS and NDPI tiles through into DICOM without decoding them.
TURBOJPEG_CHECK := ldconfig -p | grep -q 'libturbojpeg\.so'
.PHONY: system-libs
system-libs:
	$(TURBOJPEG_CHECK) || (apt-get update && apt-get install -y libturbojpeg0)

install: system-libs

install-dev: system-libs

# WADO-RS frames against Orthanc with its DICOMweb and WSI plugins (Debian packages; the
# benchmark starts its own Orthanc on loopback with a generated configuration).
.PHONY: benchmark-dicomweb
benchmark-dicomweb: install-dev
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	test -x /usr/sbin/Orthanc -a -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
		-a -f /usr/share/orthanc/plugins/libOrthancWSI.so \
		|| (apt-get update && apt-get install -y orthanc orthanc-dicomweb orthanc-wsi)
	$(BIN)/python benchmarks/dicomweb.py
