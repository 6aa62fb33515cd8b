# Nowcasting service image: the API and the worker run from the same image (the command differs).
# CUDA runtime with PyTorch preinstalled; the project's torch range (>=2.4,<3) accepts it, so pip
# installs nothing heavy on top. Tags are pinned; pin the digest too where your registry allows.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# The code and the model are root's and read-only to the service user; it writes only to /tmp
# (uploads, matplotlib's and torch's caches), so the container can run with a read-only root.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    NOWCAST_MODEL__CHECKPOINT=/app/checkpoints/default
# glibc keeps freed buffers instead of faulting them in again at every forward pass
# (model/allocator.py; the worker also sets them itself at start-up)
ENV MALLOC_MMAP_MAX_=0 \
    MALLOC_TRIM_THRESHOLD_=68719476736 \
    MALLOC_TOP_PAD_=1073741824

WORKDIR /app
COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY service ./service
RUN pip install --no-compile . && python -c "import service.app, service.worker"
# The shipped default model; mount another folder over it (or set NOWCAST_MODEL__CHECKPOINT).
COPY checkpoints/default ./checkpoints/default

RUN useradd --no-create-home --uid 10001 --user-group nowcast
USER 10001:10001

EXPOSE 8000 9101
# The API's liveness; the worker (no HTTP server) is checked through its liveness file instead
# (docker-compose.yml, deploy/k8s/worker.yaml).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
# API by default; the worker is `python -m service.worker` (docker-compose.yml, deploy/k8s).
CMD ["uvicorn", "--factory", "service.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
