//! Subcommand implementations: argument structs and thin handlers over the library.

pub mod audit;
pub mod data;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod package;
pub mod registry;
pub mod serve;
#[cfg(feature = "train")]
pub mod train;

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
