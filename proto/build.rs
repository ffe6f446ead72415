//! Generates the tonic code and a descriptor set for server reflection, with
//! the vendored protoc so that no system protoc is needed.
use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "equipoise/randomisation/v1/randomisation.proto",
    "equipoise/blinding/v1/blinding.proto",
    "equipoise/safety/v1/safety.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    // tonic-prost-build prints no rerun directives of its own.
    println!("cargo:rerun-if-changed=equipoise");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("equipoise_descriptor.bin"))
        .compile_with_config(config, &protos, &[PathBuf::from("."), well_known])?;
    Ok(())
}
