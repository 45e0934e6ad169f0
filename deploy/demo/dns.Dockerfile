# The demo's authoritative DNS server: NSD serving demo.example, whose
# config and zone docker-compose.yml mounts from this directory.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nsd \
    && rm -rf /var/lib/apt/lists/*
EXPOSE 53/udp 53/tcp
# -d: in the foreground, logging to stderr, so that docker logs shows it.
CMD ["nsd", "-d", "-c", "/etc/nsd/nsd.conf"]
