use clap::Args;
#[derive(Args)]
pub struct DemoArgs {}
pub fn run(_a: DemoArgs) -> anyhow::Result<i32> { anyhow::bail!("not yet") }
