# Two commands do all set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv train test test-cluster bench serve-demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned here (a local CPU wheel on these machines); the pyproject range stays open
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) -m vidur_ppo.train $(ARGS)

# the suite in TEST_WORKERS processes (pytest-xdist; a test file stays in one worker, so its module fixtures
# are built once); TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# the tests that start a two-node local Ray cluster on loopback (tests/test_ray_cluster.py; docs/ray.md)
test-cluster: $(STAMP)
	$(PY) -m pytest -q -m ray_cluster $(ARGS)

# the trained router inside Ray Serve against Ray's power-of-two default (experiments/results/ray_serve.md)
serve-demo: $(STAMP)
	$(PY) experiments/serve_demo.py $(ARGS)

bench: $(STAMP)
	$(PY) experiments/bench_env.py
	$(PY) experiments/bench_predictor.py

clean:
	rm -rf $(VENV) outputs
