# The two commands of the README: `make repro` and `make test`. Both create .venv when it is
# missing, and re-install into it whenever pyproject.toml or requirements.lock changed.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stages run `python -m pipeline.<stage>`: put the venv first so DVC finds the right Python.
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install repro test lint docs format lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + ": make PYTHON=python3.11 ...")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test,cluster]"
	@touch $@

repro: $(STAMP)
	dvc repro

# Two pytest-xdist workers, one a core; a test file stays on one worker (its module fixtures
# are made once), the longest files first (tests/conftest.py: LONG_FIRST); tests/test_on_jax.py
# runs the tests of layers/ and the keras TV-L1 again under JAX; the tests marked `alone` (they
# compare wall times, or hold a time limit) run after, on idle cores, collected from the files
# that mark one (collecting every file would import them all again: 5 s).
test: $(STAMP) lint docs
	python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not alone" --durations=10
	python -m pytest -p no:cacheprovider -m alone --durations=10 $$(grep -l "mark\.alone" tests/test_*.py)

# The guides in docs/ as a site in site/; --strict: a broken link or anchor, or a page missing
# from mkdocs.yml's nav, fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet

lint: $(STAMP)
	ruff check .
	ruff format --check .

format: $(STAMP)
	ruff format .
	ruff check --fix .

# Re-pin requirements.lock to what is installed now (after changing pyproject.toml ranges).
lock: $(STAMP)
	{ echo '# Exact versions that make installs (pip constraints). Regenerate with: make lock'; python -m pip freeze --exclude-editable | grep -v "^twostream-fusion"; } > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
