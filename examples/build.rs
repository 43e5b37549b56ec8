//! Generates the greeter of the gRPC examples (`proto/greeter.proto`) twice: for tonic (with
//! `tonic-prost-build`, which needs `protoc`, installed by `make test`) and for volo-grpc (with
//! `volo-build`, a pure Rust parser). The demo (`quickstart`) is another package and needs
//! neither.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/greeter.proto")?;
    volo_build::Builder::protobuf()
        .add_service("proto/greeter.proto")
        .include_dirs(vec!["proto".into()])
        .write()
        .map_err(|e| format!("volo-build: {e:#}"))?;
    Ok(())
}
