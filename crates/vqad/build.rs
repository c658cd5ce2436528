//! Records rustc's version for package provenance.
fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let v = std::process::Command::new(rustc).arg("--version").output().ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()).unwrap_or_default();
    println!("cargo:rustc-env=VQAD_RUSTC_VERSION={}", v.trim());
    println!("cargo:rerun-if-changed=build.rs");
}
