use clap::Args;
#[derive(Args)]
pub struct EvalArgs {}
#[derive(Args)]
pub struct TuneArgs {}
pub fn eval(_a: EvalArgs) -> anyhow::Result<i32> { anyhow::bail!("not yet") }
pub fn tune(_a: TuneArgs) -> anyhow::Result<i32> { anyhow::bail!("not yet") }
