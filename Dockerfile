# One image for the api, worker and Ray nodes. CPU wheels by default; for CUDA set TORCH_INDEX to a CUDA index
# (e.g. --build-arg TORCH_SPEC="torch==2.13.0" --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends build-essential curl \
    && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$TORCH_INDEX" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX"; \
    else pip install "$TORCH_SPEC"; fi
COPY pyproject.toml README.md constraints.txt ./
COPY nero_study ./nero_study
COPY api ./api
COPY workers ./workers
COPY dashboards ./dashboards
RUN pip install -c constraints.txt .

EXPOSE 8000
CMD ["nero-study", "serve", "--host", "0.0.0.0"]
