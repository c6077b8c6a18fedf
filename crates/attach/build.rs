//! Compiles the attachables protos with protox (no protoc on the build machines).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/filesync.proto",
        "proto/terminal.proto",
        "proto/tunnel.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Tunnel data as `Bytes`: decoded without a copy, sliced from what was read.
        .bytes(".dagr.tunnel.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
