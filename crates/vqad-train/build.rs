//! A RUNPATH to libtorch for this crate's own test binaries (torch-sys emits none), and
//! libtorch's version, from the wheel's torch/version.py, for provenance.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let mut libtorch_version = String::from("unknown");
    if let Ok(root) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{root}/lib");
        if let Ok(text) = std::fs::read_to_string(format!("{root}/version.py")) {
            if let Some(line) = text.lines().find(|l| l.starts_with("__version__")) {
                libtorch_version = line.split('\'').nth(1).unwrap_or("unknown").to_string();
            }
        }
    }
    println!("cargo:rustc-env=VQAD_LIBTORCH_VERSION={libtorch_version}");
}
