# The one rankflow image: every pipeline component and the Triton Deployment run it.
#   docker build -t ghcr.io/rankflow/rankflow:0.1.0 .
# Released as the package version's tag (rankflow/__init__.py, rankflow/core/image.py); CI also
# pushes every main commit as :sha-<12-hex commit>, the image `rankflow publish` pins by digest.
# Never push `latest`.
#
# Base: NGC Merlin TensorFlow 23.08, the release matching the lock's merlin-core / nvtabular /
# merlin-systems 23.8.0 pins. It brings CUDA, RAPIDS (cudf, dask-cuda), TensorFlow 2.12 and Triton
# at /opt/tritonserver with the python and tensorflow backends, all on its Python 3.10.
# Pinned by tag for now; pin the digest at release (FROM ...:23.08@sha256:<digest>).
FROM nvcr.io/nvidia/merlin/merlin-tensorflow:23.08

LABEL org.opencontainers.image.title="rankflow" \
      org.opencontainers.image.description="Multi-task ranking on Kubeflow Pipelines: NVTabular, Merlin Models, Triton" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.base.name="nvcr.io/nvidia/merlin/merlin-tensorflow:23.08"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every pin below is the requirements.lock pin (tests/k8s/test_dockerfile.py checks), installed
# with --no-deps exactly like the venv: the stack's published metadata conflicts (kfp needs
# protobuf 6, TF 2.12 claims < 5 but works on it), so pip must not resolve anything itself.

# Build tooling, as the Makefile pins it (setuptools >= 64 builds pyproject.toml's [project]).
RUN python3 -m pip install --no-deps pip==25.3 setuptools==65.5.0 wheel==0.45.1

# merlin-models: the lock's 23.12.0 over the image's 23.08 (the rest of Merlin stays as shipped).
RUN python3 -m pip install --no-deps merlin-models==23.12.0

# The KFP runtime: kfp 2.17.3 generates protobuf-6 code, so kfp, its protos and protobuf come from
# the lock together, with everything kfp's executor imports (the closure of kfp's requirements).
# Not installed: python-dateutil 4.0.0 and pycparser 3.12 need Python >= 3.11; the image's own
# python-dateutil 2.x satisfies kubernetes and kfp-server-api, and pycparser is only needed to
# build cffi modules, not to run them.
RUN python3 -m pip install --no-deps \
        kfp==2.17.3 \
        kfp-pipeline-spec==2.17.3 \
        kfp-server-api==2.17.3 \
        kfp-kubernetes==2.17.3 \
        protobuf==6.33.6 \
        googleapis-common-protos==1.75.0 \
        proto-plus==1.29.0 \
        google-api-core==2.44.0 \
        google-auth==2.63.0 \
        google-cloud-core==2.8.0 \
        google-cloud-storage==3.17.1 \
        google-crc32c==1.9.0 \
        google-resumable-media==2.11.0 \
        opentelemetry-api==1.45.2 \
        kubernetes==30.1.0 \
        websocket-client==1.9.2 \
        requests==2.33.0 \
        requests-oauthlib==2.0.0 \
        requests-toolbelt==1.0.0 \
        oauthlib==4.0.1 \
        urllib3==2.8.0 \
        certifi==2026.10.19.post1 \
        charset-normalizer==3.5.3 \
        idna==3.20 \
        cryptography==50.0.2 \
        cffi==2.1.1 \
        pyasn1==0.6.5 \
        pyasn1_modules==0.4.2 \
        click==8.5.1 \
        click-option-group==0.5.7 \
        docstring_parser==0.18.0 \
        tabulate==0.10.0 \
        PyYAML==6.0.4 \
        six==1.17.0 \
        typing_extensions==4.5.0 \
        tzdata==2026.6

# The project itself (rankflow, components, pipelines, serving; no tests). pyproject.toml admits
# the image's Python 3.10 as well as the venv's 3.11. components, pipelines and serving are
# top-level names: rankflow.packaging fails the build if anything else in the image claims one.
WORKDIR /opt/rankflow
COPY pyproject.toml README.md ./
COPY rankflow/ rankflow/
COPY components/ components/
COPY pipelines/ pipelines/
COPY serving/ serving/
RUN python3 -m pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && cd / && python3 -c "import rankflow, kfp, google.protobuf as p; assert p.__version__.startswith('6.'), p.__version__" \
    && python3 -m rankflow.packaging

# Non-root, numeric so Kubernetes can verify runAsNonRoot; the same UID/GID as the manifests'
# runAsUser/runAsGroup (k8s/serving/base/deployment.yaml) and the base image's triton-server user.
USER 1000:1000
