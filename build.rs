//! Gives the binary a RUNPATH to libtorch: torch-sys links it but emits no rpath, so without
//! this the program would only start with LD_LIBRARY_PATH set by hand. Also records, for
//! provenance, the digest of the build inputs (see src/source/), rustc's and libtorch's
//! versions, without reading git: a commit alone must not rebuild the crate.
#[path = "src/source/inputs.rs"]
mod inputs;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_some() {
        if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        } else if let Ok(root) = std::env::var("LIBTORCH") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{root}/lib");
        }
    }
    // libtorch's version, from the wheel's torch/version.py, for provenance.
    let mut libtorch_version = String::from("unknown");
    if let Ok(root) = std::env::var("LIBTORCH") {
        if let Ok(text) = std::fs::read_to_string(format!("{root}/version.py")) {
            if let Some(line) = text.lines().find(|l| l.starts_with("__version__")) {
                libtorch_version = line.split('\'').nth(1).unwrap_or("unknown").to_string();
            }
        }
    }
    println!("cargo:rustc-env=VQAD_LIBTORCH_VERSION={libtorch_version}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let v = std::process::Command::new(rustc).arg("--version").output().ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()).unwrap_or_default();
    println!("cargo:rustc-env=VQAD_RUSTC_VERSION={}", v.trim());
    // The files this build compiles; the crate recompiles when they change anyway.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let digest = inputs::build_inputs_digest(&root).expect("reading the build inputs");
    println!("cargo:rustc-env=VQAD_SOURCE_DIGEST={digest}");
    for p in ["build.rs", "Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo:rerun-if-changed={p}");
    }
    // A build outside a git checkout (a container image) may declare its commit.
    println!("cargo:rerun-if-env-changed=VQAD_BUILD_COMMIT");
    println!("cargo:rustc-env=VQAD_BUILD_COMMIT={}", std::env::var("VQAD_BUILD_COMMIT").unwrap_or_default());
}
