# The runtime image: the static (musl) binary, a CA bundle for TLS to PostgreSQL and to an
# OTLP collector, and a passwd/group entry for the non-root user 65532. Nothing else: no
# shell, no package manager. `scripts/image` builds the binary and stages this context
# (no base image can be pulled, and none is needed).
FROM scratch

LABEL org.opencontainers.image.title="dispute-service" \
      org.opencontainers.image.description="Buyer disputes on marketplace orders and where their escrowed money goes" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY passwd group /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY dispute-service /usr/local/bin/dispute-service

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    DISPUTE_LOG_FORMAT=json

USER 65532:65532
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/dispute-service"]
CMD ["serve"]
