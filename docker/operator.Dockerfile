# The operator image. Built from the repository root:
#   docker build -f docker/operator.Dockerfile -t portcullis-operator:dev .
FROM rust:1-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p portcullis-operator --bin portcullis-operator \
 && install -D -m 0755 target/release/portcullis-operator /out/portcullis-operator

FROM gcr.io/distroless/cc-debian13:nonroot
COPY --from=build /out/portcullis-operator /usr/local/bin/portcullis-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/portcullis-operator"]
CMD ["run"]
