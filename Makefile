# Two commands a new user needs: `make run` and `make test`. Everything else is for maintainers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
LINT_PATHS := $(wildcard gateway tests bench loadclient migrations)

.PHONY: run test lint fmt bench stress binary smoke venv proto clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gateway serve --dev

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy --strict gateway tests bench loadclient

test: lint
	$(PY) -m pytest -q -m "not slow and not binary"

# Long variants of the reliability suite (CI runs them too when time allows).
stress: $(STAMP)
	$(PY) -m pytest -q -m slow -o timeout=900

fmt: $(STAMP)
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

# One-file executable dist/gateway (PyInstaller, packaging/gateway.spec; docs/OPERATIONS.md).
binary: $(STAMP)
	$(PY) -c 'import PyInstaller, psycopg_binary' 2>/dev/null || $(PY) -m pip install --quiet -e '.[binary,postgres]'
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/gateway.spec

# The binary end to end: events, chat, restart with history, SIGTERM, seccomp filters of the unit.
smoke: binary
	$(PY) -m pytest -q -m binary

bench: $(STAMP)
	$(PY) -m bench.targets

# Regenerate the protobuf code of Cells' bus messages after editing gateway/cells/schema/*.proto
# (tests/test_cells_codec.py fails while the checked-in code is stale).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. gateway/cells/schema/*.proto

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
