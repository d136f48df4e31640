# syntax=docker/dockerfile:1
# Genloom's image: the API (`genloom serve`), a worker (`genloom worker`) or a one-off command
# (`genloom db upgrade`), chosen by the container's arguments.
#
#   docker build -t genloom:cpu .                          # CPU-only PyTorch (small)
#   docker build -t genloom:cuda --build-arg VARIANT=cuda .  # PyTorch with CUDA (needs the NVIDIA
#                                                            # container toolkit on the host)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    GENLOOM_DATA_DIR=/data \
    GENLOOM_SERVER__HOST=0.0.0.0

# PyTorch first, from the index that matches the variant: it is the largest layer and changes least.
RUN case "$VARIANT" in \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      cuda) index=https://pypi.org/simple ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
    && pip install --index-url "$index" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[s3]'

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin genloom \
    && mkdir -p /data && chown genloom:genloom /data
USER 10001
VOLUME ["/data"]
EXPOSE 8000

# Liveness only: readiness (/readyz) is for the orchestrator to route by.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GENLOOM_SERVER__PORT', '8000'), timeout=4)"]

ENTRYPOINT ["genloom"]
CMD ["serve"]
