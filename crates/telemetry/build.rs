//! Compiles `proto/servers.proto` (the subscription services) with protox (no protoc needed).
//! The OTLP messages it names are opentelemetry-proto's: their packages are mapped with
//! `extern_path`, and the files under `proto/opentelemetry` only declare the names.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["servers.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(
            ".opentelemetry.proto.trace.v1",
            "::opentelemetry_proto::tonic::trace::v1",
        )
        .extern_path(
            ".opentelemetry.proto.logs.v1",
            "::opentelemetry_proto::tonic::logs::v1",
        )
        .extern_path(
            ".opentelemetry.proto.metrics.v1",
            "::opentelemetry_proto::tonic::metrics::v1",
        )
        .compile_fds(fds)?;
    Ok(())
}
