//! Generates the tonic server and client from the proto files, with a vendored protoc,
//! and writes the descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("proto/dispute/v1/dispute_service.proto")],
            &[PathBuf::from("proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds the migrations at compile time: a new file must rebuild.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
