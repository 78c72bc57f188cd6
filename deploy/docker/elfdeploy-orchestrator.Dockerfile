# elfdeploy-orchestrator: runs rollouts: build, push, publish, wait for Argo CD, verify.
# Build from the repository root (the context; .dockerignore keeps build/, .git/ etc. out):
#   docker build -f deploy/docker/elfdeploy-orchestrator.Dockerfile -t elfdeploy-orchestrator .
# or with elfdeploy's own builder: context_dir = the checkout, dockerfile =
# deploy/docker/elfdeploy-orchestrator.Dockerfile. No heredocs, HEALTHCHECK, ONBUILD, remote ADD or
# --chown by name, which elfdeploy's builder refuses; health checks are Kubernetes probes.

# Stage 1: the Debian 12 -dev packages of deploy/local/install-deps.sh ("build"; no test-only
# packages: tests are off) and one CMake target.
FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake ninja-build g++ pkg-config \
      libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev libabsl-dev \
      libyaml-cpp-dev libgit2-dev prometheus-cpp-dev libcurl4-openssl-dev nlohmann-json3-dev \
      libssl-dev zlib1g-dev libarchive-dev libsqlite3-dev libdeflate-dev libcpp-httplib-dev \
      libsimdjson-dev libyaml-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY proto/ proto/
COPY third_party/ third_party/
COPY services/ services/
COPY agent/ agent/
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DELFDEPLOY_BUILD_TESTS=OFF \
 && cmake --build /build --target elfdeploy-orchestrator \
 && strip /build/bin/elfdeploy-orchestrator

# Stage 2: the runtime libraries only, the binary, and an unprivileged user (65532).
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libabsl20220623 libgrpc++1.51 libprometheus-cpp-pull1.0 libprotobuf32 \
      libsqlite3-0 libyaml-cpp0.7 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 elfdeploy \
 && useradd --uid 65532 --gid 65532 --home-dir /home/elfdeploy --shell /usr/sbin/nologin elfdeploy \
 && install -d -o 65532 -g 65532 -m 0750 /home/elfdeploy /var/lib/elfdeploy/orchestrator
COPY --from=build /build/bin/elfdeploy-orchestrator /usr/local/bin/elfdeploy-orchestrator
USER 65532:65532
WORKDIR /home/elfdeploy
EXPOSE 7400 9400
ENTRYPOINT ["/usr/local/bin/elfdeploy-orchestrator"]
