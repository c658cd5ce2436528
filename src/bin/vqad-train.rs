//! `vqad-train`: the full `vqad` command line with the training stack (libtorch) linked in.
//! Users type `vqad`; it hands training commands here (see src/main.rs).

#[path = "../cli/mod.rs"]
mod cli;
#[path = "../trainer/mod.rs"]
mod trainer;

fn main() {
    cli::main(trainer::run)
}
