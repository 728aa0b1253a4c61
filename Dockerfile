# koaimg for a GPU workstation (or CPU). Installs exactly as the README does (`make setup`), with build arguments to
# choose the torch build:
#   CPU:  docker build -t koaimg .
#   CUDA: docker build -t koaimg:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                      --build-arg EXTRAS=dev,dicom-codecs,stats,report,cluster,qa,gpu .
#         docker run --gpus all -v /data:/data koaimg:cuda doctor
# PyTorch CUDA wheels bundle cudart/cuDNN/cuBLAS and numba-cuda[cu12] brings NVVM, so the host needs only the NVIDIA
# driver and the container toolkit.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=
ARG EXTRAS=dev,dicom-codecs,stats,report,cluster,qa

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/var/cache/koaimg/numba \
    PATH=/opt/koaimg/.venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 koaimg \
 && mkdir -p /opt/koaimg /var/cache/koaimg/numba \
 && chown -R koaimg:koaimg /opt/koaimg /var/cache/koaimg

WORKDIR /opt/koaimg
COPY --chown=koaimg:koaimg . .
USER koaimg
RUN make setup TORCH_SPEC="${TORCH_SPEC}" TORCH_INDEX="${TORCH_INDEX}" EXTRAS="${EXTRAS}" \
 && koaimg doctor

VOLUME ["/var/cache/koaimg/numba"]
ENTRYPOINT ["koaimg"]
CMD ["--help"]
