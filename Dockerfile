# Builds clinicd and runs it as an unprivileged user. Not exercised by CI (no Docker engine on
# our build machines); ./scripts/dev and ./scripts/test are the supported paths.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin clinicd

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/clinicd --create-home clinicd
COPY --from=build /src/target/release/clinicd /usr/local/bin/clinicd
USER clinicd
WORKDIR /var/lib/clinicd
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/clinicd"]
CMD ["serve"]
