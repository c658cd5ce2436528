//! `vqad`: every command but training runs here, without libtorch (`vqad --version`,
//! `verify`, `list`, `detect`, `serve` start in milliseconds). Training commands (demo, train,
//! bench-train, export, tune, package) are handed to the `vqad-train` executable beside this
//! one, which parses the same command line and links the training stack.

mod cli;

fn main() {
    cli::main(hand_to_trainer)
}

/// Replaces this process with `vqad-train` and the same arguments.
fn hand_to_trainer(_: cli::Training) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let exe = cli::trainer_exe().ok_or_else(|| {
        anyhow::anyhow!(
            "this command trains, which needs the `vqad-train` executable (libtorch); it is not beside {} nor on PATH. \
             This looks like a runtime-only installation (inference hosts need no libtorch); \
             build the full one with `make build` (or `cargo build --release` after tools/setup-native.sh)",
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "vqad".into())
        )
    })?;
    let err = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    Err(anyhow::anyhow!("starting {}: {err}", exe.display()))
}
