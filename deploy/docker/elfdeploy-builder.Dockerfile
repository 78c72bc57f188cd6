# elfdeploy-builder: builds OCI images from Dockerfiles without a daemon; RUN steps go to buildah.
# Build from the repository root (the context; .dockerignore keeps build/, .git/ etc. out):
#   docker build -f deploy/docker/elfdeploy-builder.Dockerfile -t elfdeploy-builder .
# or with elfdeploy's own builder: context_dir = the checkout, dockerfile =
# deploy/docker/elfdeploy-builder.Dockerfile. No heredocs, HEALTHCHECK, ONBUILD, remote ADD or
# --chown by name, which elfdeploy's builder refuses; health checks are Kubernetes probes.
#
# buildah runs RUN steps (rootless, --isolation chroot, vfs storage under $HOME); it needs an
# unprivileged user namespace at run time (deploy/k8s/README.md).

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
 && cmake --build /build --target elfdeploy-builder \
 && strip /build/bin/elfdeploy-builder

# Stage 2: the runtime libraries only, the binary, and an unprivileged user (65532);
# /etc/subuid and /etc/subgid give rootless buildah the ranges for the build's user namespace.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libabsl20220623 libarchive13 libcurl4 libdeflate0 libgit2-1.5 \
      libgrpc++1.51 libprometheus-cpp-pull1.0 libprotobuf32 libssl3 libyaml-cpp0.7 zlib1g \
      buildah \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 elfdeploy \
 && useradd --uid 65532 --gid 65532 --home-dir /home/elfdeploy --shell /usr/sbin/nologin elfdeploy \
 && install -d -o 65532 -g 65532 -m 0750 /home/elfdeploy /var/lib/elfdeploy/builder \
 && echo 'elfdeploy:100000:65536' >/etc/subuid \
 && echo 'elfdeploy:100000:65536' >/etc/subgid
COPY --from=build /build/bin/elfdeploy-builder /usr/local/bin/elfdeploy-builder
USER 65532:65532
WORKDIR /home/elfdeploy
EXPOSE 7401 9401
ENTRYPOINT ["/usr/local/bin/elfdeploy-builder"]
