# tokbench on a GPU host: docker build -t tokbench . && docker run --gpus all tokbench run
# PyTorch's CUDA wheels carry their own CUDA runtime, so a plain Python image is enough; the host
# needs the NVIDIA driver and container toolkit.
FROM python:3.12-slim

RUN apt-get update && apt-get install -y --no-install-recommends git gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /tokbench
COPY pyproject.toml README.md ./
COPY bench bench
COPY kernels kernels
RUN pip install --no-cache-dir -e '.[test,plot]'

COPY tests tests
VOLUME /tokbench/results
ENTRYPOINT ["tokbench"]
CMD ["run"]
