//! Gives the binary a RUNPATH to libtorch: torch-sys links it but emits no rpath, so without
//! this the program would only start with LD_LIBRARY_PATH set by hand.
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
    // Recorded in package provenance.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let v = std::process::Command::new(rustc).arg("--version").output().ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()).unwrap_or_default();
    println!("cargo:rustc-env=VQAD_RUSTC_VERSION={}", v.trim());
    let commit = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok()).unwrap_or_default();
    println!("cargo:rustc-env=VQAD_GIT_COMMIT={}", commit.trim());
    println!("cargo:rerun-if-changed=.git/HEAD");
}
