# One image for every role of compose.yaml (node, operator, loadgen, chaos):
# the static ratelimiter binary in an otherwise empty image, run as a
# non-root user. Build: docker build -t ratelimiter .
# Run: docker run -p 8080:8080 ratelimiter node  (the in-process store)

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: no libc in the final image; SQLite is pure Go.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ratelimiter . \
 && mkdir -p /out/data

FROM scratch
# CA roots for HTTPS calls (the operator's optional LLM diagnoser).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/ratelimiter /ratelimiter
# The operator's SQLite file lives here; a named volume mounted on /data
# takes this ownership.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
# No shell or curl here: the binary probes itself. The default URL is a
# node's; compose.yaml sets HEALTH_URL for the other roles.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/ratelimiter", "health"]
ENTRYPOINT ["/ratelimiter"]
CMD ["node"]
