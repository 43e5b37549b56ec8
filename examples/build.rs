//! Generates the tonic greeter (`proto/greeter.proto`) of the gRPC example. Needs `protoc`
//! (installed by `make test`); the demo (`quickstart`) is another package and does not.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::compile_protos("proto/greeter.proto")?;
    Ok(())
}
