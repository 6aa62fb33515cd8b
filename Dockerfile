# Nowcasting service image: the API and the worker run from the same image (the command differs).
# CUDA runtime with PyTorch preinstalled; the project's torch range (>=2.4,<3) accepts it, so pip
# installs nothing heavy on top.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
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

RUN useradd --create-home --uid 10001 nowcast && chown -R nowcast /app
USER nowcast

EXPOSE 8000 9101
# API by default; the worker is `python -m service.worker` (docker-compose.yml, deploy/k8s).
CMD ["uvicorn", "--factory", "service.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
