# cachalot container image: multi-stage build, small non-root runtime.
#
# No Docker engine runs where cachalot is developed, so this file is kept correct by reading
# (and by tests/deploy.rs, which checks its paths, ports and variables): it uses only the
# same cargo build the tests use and the binary's documented interface (`cachalot run
# --config FILE`, `cachalot health`, the CACHALOT_* and REDIS_URL variables, RUST_LOG).
# Review it when either changes.
#
#   docker build -t cachalot .
#   docker run -p 8080:8080 -p 127.0.0.1:9901:9901 \
#     -e CACHALOT_ORIGIN=http://api:5000 -e REDIS_URL=redis://redis:6379 cachalot
#
# The baked policy is config/cachalot.toml, which listens on 127.0.0.1 and names a local
# origin: the environment below makes the image listen on every interface (inside a
# container 127.0.0.1 is the container itself), and CACHALOT_ORIGIN / REDIS_URL say where the
# API and Redis are; each wins over the file. Mount your own policy over
# /etc/cachalot/cachalot.toml (read-only is fine; mount its directory to have edits reload).
# Publish the admin port only to trusted networks: it carries health, metrics, the status
# page and purge.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# The manifest names a bench target, so its file must exist for cargo to read the manifest.
RUN mkdir src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/cachalot

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cachalot
COPY --from=build /src/target/release/cachalot /usr/local/bin/cachalot
COPY config/cachalot.toml /etc/cachalot/cachalot.toml
USER 10001:10001
ENV RUST_LOG=info CACHALOT_CONFIG=/etc/cachalot/cachalot.toml CACHALOT_LISTEN=0.0.0.0:8080 CACHALOT_ADMIN_LISTEN=0.0.0.0:9901
EXPOSE 8080 9901
# GET /readyz on the admin port, by the binary itself (the image has no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/cachalot", "health"]
# Mount your policy over /etc/cachalot/cachalot.toml (read-only is fine).
ENTRYPOINT ["/usr/local/bin/cachalot"]
CMD ["run", "--config", "/etc/cachalot/cachalot.toml"]
