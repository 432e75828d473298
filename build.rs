//! Generates the etcd v3 wire types, server traits and (for tests and tools) clients from `proto/`.
//! Uses the system `protoc` when there is one, else the vendored binary, so `cargo build` works anywhere.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let have_system_protoc =
        std::env::var_os("PROTOC").is_some() || std::process::Command::new("protoc").arg("--version").output().is_ok();
    if !have_system_protoc {
        let vendored = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", vendored) };
    }
    let protos = [
        "proto/etcdserverpb/rpc.proto",
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/grpc/health/v1/health.proto",
        "proto/v3lockpb/v3lock.proto",
        "proto/v3electionpb/v3election.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out_dir.join("etcd_descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .generate_default_stubs(true)
        // etcd's wording when a request does not decode (src/etcd/codec.rs)
        .codec_path("crate::etcd::codec::EtcdCodec")
        .compile_protos(&protos, &[Path::new("proto")].map(|p| p.to_str().expect("utf-8 path")))?;
    // etcd's JSON gateway mapping (grpc-gateway's jsonpb with OrigName): proto field names, int64 as
    // strings, bytes as base64, enum names, default values left out; unknown fields ignored, as etcd's
    // gateway ignores them.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb", ".v3lockpb", ".v3electionpb"])?;
    Ok(())
}
