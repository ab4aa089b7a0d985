# foldtune: the `hpo` CLI on a CUDA build of PyTorch. One image for every compose service
# (study, worker, dashboard, and the MLflow server: `mlflow` comes with foldtune's dependencies).
#
#   docker build -t foldtune .
#   docker run --rm --gpus all foldtune doctor
#
# The base image's torch must equal pyproject's pin (torch==2.14.1), or pip installs a second
# copy; override both together: --build-arg BASE_IMAGE=pytorch/pytorch:<torch>-cuda<x.y>-cudnn9-runtime
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

# HF_HOME: the Hugging Face cache of pretrained weights, one for every process of a study: compose
# mounts its hf-cache volume there, Kubernetes the foldtune-hf claim.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/work/.hpo/hf \
    MPLBACKEND=Agg

WORKDIR /opt/foldtune
# dependencies first: this layer is rebuilt only when pyproject.toml changes
COPY pyproject.toml README.md ./
RUN mkdir -p hpo training storage search_spaces \
    && touch hpo/__init__.py training/__init__.py storage/__init__.py search_spaces/__init__.py \
    && pip install . \
    && pip uninstall -y foldtune
COPY hpo ./hpo
COPY training ./training
COPY storage ./storage
COPY search_spaces ./search_spaces
RUN pip install --no-deps . && hpo --help > /dev/null

# Unprivileged user; /work holds .hpo/ (image cache, checkpoints, artifacts) and .hpo/hf (weights)
# on named volumes, created here so a fresh volume inherits the ownership.
RUN useradd --create-home --uid 1000 hpo \
    && mkdir -p /work/.hpo/hf /mlartifacts \
    && chown -R hpo:hpo /work /mlartifacts
USER hpo
WORKDIR /work

ENTRYPOINT ["hpo"]
CMD ["--help"]
