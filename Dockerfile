# szb-sync container: `docker compose --profile app up` (see docker-compose.yml).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin szb-sync

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /app szb
WORKDIR /app
COPY --from=build /src/target/release/szb-sync /usr/local/bin/szb-sync
COPY config ./config
USER szb
ENTRYPOINT ["szb-sync"]
CMD ["run"]
