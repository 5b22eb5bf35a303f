# szb-sync in a container: a build stage with the Rust toolchain, then a runtime image with the
# binary alone (distroless cc: glibc, libgcc, CA certificates, no shell), running as a non-root
# user. No configuration and no secret is in the image: mount a config file at
# /app/config/szb-sync.toml (the default path) or pass --config, or set SZB_<SECTION>__<KEY>
# variables (without a config file, SZB_TARGETS must set the targets), and give the token as a
# file (SZB_API__TOKEN_FILE=/run/secrets/…).
# See docker-compose.yml, and docs/operations.md ("Containers") for what the tests check.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other crate (the simulator, behind `demo` and `mock-api`).
COPY crates ./crates
# sqlx::migrate! embeds the migrations at compile time.
COPY migrations ./migrations
# `szb-sync bench` embeds the example queries of this page (include_str!).
COPY docs/tables.md ./docs/tables.md
RUN cargo build --release --locked --bin szb-sync

# Same Debian release as the build stage, so the binary's glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/szb-sync /usr/bin/szb-sync
# The default config path, config/szb-sync.toml, is relative to this directory.
WORKDIR /app
# The [http] listener (metrics, /livez, /readyz, the status page) when SZB_HTTP__LISTEN or
# [http] listen sets it, e.g. 0.0.0.0:9187.
EXPOSE 9187
# uid 65532 ("nonroot") from the base image.
USER nonroot:nonroot
ENTRYPOINT ["/usr/bin/szb-sync"]
CMD ["run", "--log-format", "json"]
