# Production image of the pipeline: the same lock as `make venv`, `lcron` as the entry point.
# Used as the TFX container image on Dataflow / Kubeflow and for `lcron serve`.
# Not built on our development machines (no Docker engine there); tests/test_dockerfile.py
# checks that its pins come from requirements.txt.
FROM python:3.10.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/lcron

# Dependencies first so code edits reuse the cached layer; uv resolves nothing, it installs the
# lock. pip stays in the image: TFX's Trainer pip-installs the user module at run time.
COPY requirements.txt ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache -r requirements.txt

COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY components ./components
COPY models ./models
COPY simulator ./simulator
COPY serving ./serving
COPY experiments ./experiments
COPY data ./data
RUN uv pip install --system --no-cache --no-deps .

RUN useradd --create-home --uid 1000 lcron
USER lcron

ENTRYPOINT ["lcron"]
CMD ["--help"]
