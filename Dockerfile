# devourer in a container. Build: docker build -t devourer .   (or scripts/build_image.sh, with buildah)
# Run:   docker run --rm --net=host --cap-add=NET_RAW --cap-add=NET_ADMIN -e DEVOURER_INTERFACE=eth0 devourer capture
# Every setting comes from DEVOURER_* variables (DEVOURER_OUTPUT=bigquery, DEVOURER_WORKERS=4, ...) or flags.

# ---- build stage: a compiler and headers for the wheels that build from source (pcapy-ng)
FROM debian:bookworm-slim AS build
# a CA bundle for pip, where downloads pass a TLS-inspecting proxy (scripts/build_image.sh mounts the host's)
ARG PIP_CA_BUNDLE
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libpcap-dev python3-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY devourer ./devourer
RUN python3 -m venv /opt/devourer \
 && if [ -n "$PIP_CA_BUNDLE" ]; then export PIP_CERT="$PIP_CA_BUNDLE"; fi \
 && /opt/devourer/bin/pip install --no-cache-dir .

# ---- the image: Python, libpcap, the virtual environment; no compiler
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libpcap0.8 libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /var/lib/devourer --create-home \
      --shell /usr/sbin/nologin devourer
COPY --from=build /opt/devourer /opt/devourer
COPY samples/http.pcap /opt/devourer/share/http.pcap
ENV PATH=/opt/devourer/bin:$PATH \
    NUMBA_CACHE_DIR=/var/lib/devourer/numba-cache \
    DEVOURER_SPOOL_DIR=/var/lib/devourer/spool
# The interpreter gets the capture capabilities as *permitted* only (not effective): devourer raises them
# when it opens an interface, and the image still runs where they are not granted (replaying files).
# Compiling the hot loops once here (a replay of the sample) saves every container start that work.
RUN setcap cap_net_raw,cap_net_admin+ip "$(readlink -f /opt/devourer/bin/python3)" \
 && devourer capture -r /opt/devourer/share/http.pcap -o file -w /dev/null --quiet \
 && chown -R devourer:devourer /var/lib/devourer
USER 10001:10001
WORKDIR /var/lib/devourer
ENTRYPOINT ["devourer"]
CMD ["--help"]
