# One image for the api, worker and Ray nodes. PyTorch's CPU build by default; for CUDA set TORCH_INDEX to a CUDA
# index (e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128). Keep TORCH_SPEC at the version
# requirements.lock pins.
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
# Chromium renders figures as SVG/PDF for downloads (dashboards/figure_export.py, kaleido).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl chromium \
    && rm -rf /var/lib/apt/lists/*
RUN pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md requirements.lock ./
COPY nero_study ./nero_study
COPY api ./api
COPY workers ./workers
COPY dashboards ./dashboards
# Every other distribution at the version CI tested (requirements.lock; torch==2.13.0 there admits the CUDA build).
RUN pip install -c requirements.lock pip setuptools wheel \
    && pip install --no-build-isolation -c requirements.lock .

EXPOSE 8000
CMD ["nero-study", "serve", "--host", "0.0.0.0"]
