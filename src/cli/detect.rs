use clap::Args;
#[derive(Args)]
pub struct DetectArgs {}
#[derive(Args)]
pub struct BenchArgs {}
pub fn detect(_a: DetectArgs) -> anyhow::Result<i32> { anyhow::bail!("not yet") }
pub fn bench(_a: BenchArgs) -> anyhow::Result<i32> { anyhow::bail!("not yet") }
