# Two commands do all the set-up: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VPY) -m qmr_jax.cli demo --out out

test: $(STAMP)
	$(VPY) -m pytest -n 2 --dist loadfile -q

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow

bench: $(STAMP)
	$(VPY) benchmarks/run_all.py

lint: $(STAMP)
	$(VPY) -m ruff check .

clean:
	rm -rf $(VENV) out .pytest_cache
