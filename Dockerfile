# The cluster (gpu) stack: CUDA runtime, Python 3.12, `pip install .[gpu]`, non-root user.
# Build: docker build -t medvlthinker .   Run: docker run --gpus all --ipc=host -it medvlthinker
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VLLM_USE_FLASHINFER_SAMPLER=0

RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev git build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --shell /bin/bash medvl
USER medvl
WORKDIR /home/medvl/medvlthinker

RUN python3.12 -m venv /home/medvl/venv
ENV PATH=/home/medvl/venv/bin:$PATH

# Dependencies first (cached layer), then the project.
COPY --chown=medvl:medvl pyproject.toml README.md ./
COPY --chown=medvl:medvl medvlthinker/__init__.py medvlthinker/__init__.py
RUN pip install --upgrade pip && pip install '.[gpu]' && pip uninstall -y medvlthinker
COPY --chown=medvl:medvl . .
RUN pip install --no-deps -e .

CMD ["bash"]
