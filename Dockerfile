# defects, CPU image: `defects serve` on port 8000, the model from a mounted volume.
#
#   docker build -t defects .                                  # without the yolo extra
#   docker build -t defects --build-arg EXTRAS=yolo .          # + Ultralytics (AGPL-3.0)
#   docker run -p 8000:8000 -v "$PWD/models/weld:/models:ro" defects
#
# Build arguments:
#   BASE_IMAGE  any image with Python 3.11 or 3.12 and its venv module (an official slim
#               Python image by default; a debootstrap-made Debian with python3-venv works).
#   EXTRAS      the package's extras to install, comma separated: "" (default), "yolo", "dvc".
#   PIP_INDEX_URL / PIP_EXTRA_INDEX_URL
#               pip reads them while the image builds: name PyTorch's CPU-only wheel index
#               here (PyTorch's install selector gives its URL) for a CPU torch without the
#               CUDA libraries, or a local mirror. Unset, pip resolves torch from the default
#               index.
#   PIP_FIND_LINKS / PIP_CONSTRAINT
#               also pip's own: a folder of wheels and a constraints file (e.g. the lock's
#               versions) inside the build, such as a volume the builder mounts.
ARG BASE_IMAGE=python:3.11-slim

# ---- build: the wheel (poetry-core, PEP 517), nothing else --------------------------------
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir "poetry-core>=2.0,<3"
COPY pyproject.toml README.md ./
COPY defects ./defects
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# ---- runtime: the wheel and its dependencies in a venv, run by a non-root user ------------
FROM ${BASE_IMAGE} AS runtime
ARG EXTRAS=""
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/defects/bin:$PATH \
    MPLBACKEND=Agg HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false DVC_NO_ANALYTICS=1 \
    GIT_PYTHON_REFRESH=quiet \
    DEFECTS_DATA_DIR=/data DEFECTS_MODEL_DIR=/models DEFECTS_OUTPUT_DIR=/outputs \
    DEFECTS_DEVICE=cpu
COPY --from=build /dist /dist
SHELL ["/bin/sh", "-eu", "-c"]
RUN wheel="$(ls /dist/defects-*.whl)"; \
    if [ -n "${EXTRAS}" ]; then wheel="${wheel}[${EXTRAS}]"; fi; \
    python3 -m venv /opt/defects; \
    /opt/defects/bin/pip install --no-cache-dir "${wheel}"; \
    rm -rf /dist; \
    groupadd --system --gid 10001 defects; \
    useradd --system --uid 10001 --gid defects --home-dir /home/defects --create-home defects; \
    mkdir -p /data /models /outputs /mlflow; \
    chown defects:defects /data /models /outputs /mlflow
USER 10001:10001
WORKDIR /home/defects
EXPOSE 8000
# /health answers 200 once the model has loaded (urllib: no curl in a slim image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["defects"]
CMD ["serve", "--model", "/models/bundle.pt", "--host", "0.0.0.0", "--port", "8000"]
