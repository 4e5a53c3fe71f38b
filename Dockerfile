# edgeprune in a container: `docker run -v "$PWD:/work" edgeprune build --target rpi4`
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir build==1.6.1
COPY pyproject.toml README.md ./
COPY edgeprune ./edgeprune
COPY targets ./targets
COPY examples ./examples
COPY calib_data ./calib_data
RUN python -m build --wheel --outdir /dist

FROM ${PYTHON_IMAGE}
RUN useradd --create-home --uid 1000 edgeprune
COPY --from=build /dist/ /tmp/dist/
RUN python -m pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["edgeprune"]
CMD ["--help"]
