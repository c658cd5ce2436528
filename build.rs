//! For the executables: a RUNPATH to libtorch for `vqad-train` and the tests (torch-sys links
//! it but emits no rpath, so without this they would only start with LD_LIBRARY_PATH set by
//! hand; `vqad` itself links no libtorch and gets none), and, for provenance, the digest of
//! the build inputs (see crates/vqad/src/source/), without reading git: a commit alone must not
//! rebuild anything.
#[path = "crates/vqad/src/source/inputs.rs"]
mod inputs;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        if let Ok(root) = std::env::var("LIBTORCH") {
            println!("cargo:rustc-link-arg-bin=vqad-train=-Wl,-rpath,{root}/lib");
            println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{root}/lib");
        }
    }
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let digest = inputs::build_inputs_digest(&root).expect("reading the build inputs");
    println!("cargo:rustc-env=VQAD_SOURCE_DIGEST={digest}");
    for p in inputs::ROOTS {
        println!("cargo:rerun-if-changed={p}");
    }
    // A build outside a git checkout (a container image) may declare its commit.
    println!("cargo:rerun-if-env-changed=VQAD_BUILD_COMMIT");
    println!("cargo:rustc-env=VQAD_BUILD_COMMIT={}", std::env::var("VQAD_BUILD_COMMIT").unwrap_or_default());
}
