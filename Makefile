# make demo: build the bundled example for rpi4.  make test: the whole test suite.
# make docs: regenerate docs/cli.md.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeprune-installed

.PHONY: demo test test-fast lint install clean system-packages docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgeprune build --target rpi4

lint: $(STAMP)
	$(BIN)/ruff check edgeprune tests bench examples docs

# docs/cli.md from the commands' --help (tests/test_docs.py fails when it is stale).
docs: $(STAMP)
	$(BIN)/python docs/gen_cli_reference.py

# Debian packages the tests drive for real (sshd, QEMU, debootstrap, Chromium, podman).
system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then bash .ci/system-packages.sh; \
	else echo "not root or no apt-get: install the packages in .ci/system-packages.sh yourself"; fi

test: system-packages lint
	$(BIN)/pytest -q -ra

test-fast: lint
	$(BIN)/pytest -q -ra -m "not slow"

clean:
	rm -rf build .pytest_cache
