# spf-milter container image: a static binary on a distroless base, run as
# an unprivileged user.
#
#   docker build -t spf-milter .
#   docker run --rm -p 8895:8895 spf-milter
#
# The image's config is examples/config.yaml listening on all interfaces
# (inet:0.0.0.0:8895), since a milter bound to the container's loopback
# cannot be reached by an MTA outside it. Mount your own file over
# /etc/spf-milter/config.yaml to change it; "spf-milter validate --config"
# checks one. SIGHUP (docker kill -s HUP) reloads it, SIGTERM (docker stop)
# drains the sessions in flight and exits.

FROM golang:1.26 AS build
WORKDIR /src
# The module download is its own layer, so that a source change does not
# fetch every dependency again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: a static binary that needs no libc in the runtime image;
# -trimpath and -s -w keep build paths and debug data out of it.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/spf-milter ./cmd/spf-milter
# The example config with the one change a container needs; the grep fails
# the build if the example's listen line ever changes and the edit misses.
RUN sed 's/^listen: inet:127\.0\.0\.1:8895$/listen: inet:0.0.0.0:8895/' examples/config.yaml > /out/config.yaml \
    && grep -q '^listen: inet:0\.0\.0\.0:8895$' /out/config.yaml \
    && /out/spf-milter validate --config /out/config.yaml >/dev/null

# distroless/static: CA certificates, tzdata and /etc/passwd with the
# "nonroot" user (65532), nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/spf-milter /spf-milter
COPY --from=build /out/config.yaml /etc/spf-milter/config.yaml
USER nonroot:nonroot
EXPOSE 8895
ENTRYPOINT ["/spf-milter", "serve"]
CMD ["--config", "/etc/spf-milter/config.yaml"]
