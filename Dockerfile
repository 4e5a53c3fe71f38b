# edgeprune in a container. Mount your project at /work; artifacts land in ./build/<target>/.
#   docker build -t edgeprune .                       (add --build-arg WITH_QEMU=1 for QEMU,
#                                                      --build-arg EXTRAS="vela onnx" for ONNX)
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" edgeprune build --target rpi4
# Without --user, files are written as uid 1000 (the image's user).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- pins: the runtime requirements with the extras in EXTRAS (space-separated; e.g.
# --build-arg EXTRAS="vela onnx" for --export onnx), exactly as pyproject.toml pins them
FROM ${PYTHON_IMAGE} AS pins
ARG EXTRAS="vela"
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + [r for e in os.environ['EXTRAS'].split() \
for r in p['optional-dependencies'][e]]))" > requirements.txt

# --- deps: a venv with every dependency. Cached by the content of requirements.txt, so only a
# change of the pins reinstalls TensorFlow (over 1 GB), not a source or test-extra edit.
FROM ${PYTHON_IMAGE} AS deps
RUN python -m venv /opt/edgeprune
COPY --from=pins /src/requirements.txt /tmp/requirements.txt
RUN /opt/edgeprune/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# --- build: the wheel, installed (--no-deps) under /app with the venv's layout ----------------
FROM deps AS build
RUN python -m pip install --no-cache-dir build==1.6.1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY targets ./targets
COPY examples/digits ./examples/digits
COPY calib_data ./calib_data
COPY edgeprune ./edgeprune
RUN python -m build --wheel --outdir /dist \
    && /opt/edgeprune/bin/pip install --no-cache-dir --no-deps --prefix /app /dist/*.whl

# --- runtime: the deps stage (base + venv, no compilers), edgeprune merged in, non-root -------
# Based on deps rather than copying its 2.5 GB venv: nothing to copy or re-hash per build.
FROM deps
# QEMU user-mode tooling for emulated ARM measurements (--build-arg WITH_QEMU=1). Provisioning
# the arm64 root runs debootstrap, which needs root: run such containers with --user 0:0.
ARG WITH_QEMU=0
# Unpinned on purpose: Debian security updates replace exact bookworm versions, which would
# make pinned installs fail; the suite (bookworm) fixes the major versions.
# hadolint ignore=DL3008
RUN if [ "$WITH_QEMU" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends qemu-user-static debootstrap \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 1000 edgeprune
COPY --from=build /app/ /opt/edgeprune/
# MPLCONFIGDIR: with --user <any uid> there may be no writable home for matplotlib's cache.
ENV PATH=/opt/edgeprune/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib
# The pins agree with each other and edgeprune landed in the venv.
RUN pip check && edgeprune --version
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["edgeprune"]
CMD ["--help"]
