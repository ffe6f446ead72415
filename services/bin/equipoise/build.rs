//! Embeds the web page (`web/dist/`, built and committed by `make web`) in
//! the binary: one table of paths and `include_bytes!`, in a stable order,
//! so the same files always make the same binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dist = manifest.join("../../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    let mut table = String::from("&[\n");
    for (path, absolute) in &files {
        println!("cargo:rerun-if-changed={}", absolute.display());
        let _ = writeln!(
            table,
            "    equipoise_common::grpc::web::PageFile {{ path: {path:?}, bytes: include_bytes!({:?}) }},",
            absolute.display().to_string()
        );
    }
    table.push(']');
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("page_files.rs");
    if let Err(error) = fs::write(&out, table) {
        panic!("cannot write {}: {error}", out.display());
    }
}

/// Every file under `dir`, as (its path from `root` with a leading `/`,
/// its absolute path). A missing `web/dist` embeds nothing.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let served = format!("/{}", relative.to_string_lossy().replace('\\', "/"));
            let absolute = path.canonicalize().unwrap_or(path);
            files.push((served, absolute));
        }
    }
}
