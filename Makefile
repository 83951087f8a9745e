# make run   - install what is missing, start the station on http://127.0.0.1:8080
# make test  - install what is missing (Debian packages too), run every test
# make bench - run the benchmarks and print their table (options: make bench ARGS='--only sync --repeat 5';
#              make bench ARGS=--help lists them)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Packages the station needs to run: a TrueType font with Vietnamese glyphs, PC/SC and what pyscard builds
# with, the vpcd virtual reader (a simulated card when no reader is attached), libusb for USB printers,
# espeak-ng for spoken prompts.
DEBS_RUN := fonts-dejavu-core pcscd vsmartcard-vpcd libpcsclite-dev swig libusb-1.0-0 espeak-ng sane-utils
# ...and what the tests need on top: a browser, PostgreSQL for the central's storage tests, libfaketime
# to move a sync worker's clock in the recovery tests, and nginx in front of the central's worker processes
# (tests/test_central_processes.py, the central-load bench).
DEBS_TEST := $(DEBS_RUN) chromium postgresql faketime nginx

.PHONY: run test bench debs-run debs-test clean

run: debs-run $(STAMP)
	$(BIN)/kiosk audio build
	$(BIN)/kiosk serve --simulate-missing

test: debs-test $(STAMP)
	$(BIN)/pytest

bench: debs-test $(STAMP)
	$(BIN)/python -m tests.bench $(ARGS)

debs-run:
	@scripts/ensure-debian-packages $(DEBS_RUN)

debs-test:
	@scripts/ensure-debian-packages $(DEBS_TEST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var/ .pytest_cache
