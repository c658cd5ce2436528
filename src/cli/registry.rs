//! promote, rollback, history: registry channels.

use clap::Args;
use std::path::PathBuf;
use vqad::package::{SigningKey, TrustedKey};
use vqad::registry::{self, ChannelHistory, ChannelOptions, RecordFile};

#[derive(Args)]
pub struct PromoteArgs {
    /// Registry folder.
    pub registry: PathBuf,
    /// Category name.
    pub name: String,
    /// Published version to assign (it is verified first).
    pub version: String,
    /// Channel to assign it to (e.g. production, staging).
    #[arg(long)]
    pub channel: String,
    /// Signing key (PREFIX.key); the channel's history must verify with its public key.
    #[arg(long)]
    pub key: PathBuf,
    /// Days until the record expires; clients refuse an expired channel, so renew before
    /// then (promoting the same version again renews it).
    #[arg(long, default_value_t = registry::DEFAULT_EXPIRY_DAYS)]
    pub expires_in: u32,
    /// Print the new record as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub lock: LockFlags,
}

/// How long a registry writer waits for another to finish.
#[derive(Args, Clone)]
pub struct LockFlags {
    /// Seconds to wait for the registry lock while another publish, promote or rollback holds
    /// it (progress is printed every 5 s; a lock left by a writer that died is taken over).
    #[arg(long, env = "VQAD_LOCK_TIMEOUT", default_value_t = 120, value_name = "SECS")]
    pub lock_timeout: u64,
}

impl LockFlags {
    pub fn options(&self) -> registry::LockOptions {
        registry::LockOptions { timeout: std::time::Duration::from_secs(self.lock_timeout), ..Default::default() }
    }
}

#[derive(Args)]
pub struct RollbackArgs {
    /// Registry folder.
    pub registry: PathBuf,
    /// Category name.
    pub name: String,
    /// Channel to roll back.
    #[arg(long)]
    pub channel: String,
    /// Signing key (PREFIX.key).
    #[arg(long)]
    pub key: PathBuf,
    /// Days until the new record expires.
    #[arg(long, default_value_t = registry::DEFAULT_EXPIRY_DAYS)]
    pub expires_in: u32,
    /// Print the new record as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub lock: LockFlags,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Registry folder.
    pub registry: PathBuf,
    /// Category name.
    pub name: String,
    /// Only this channel (default: every channel of NAME).
    #[arg(long)]
    pub channel: Option<String>,
    /// Verify every record with this public key (otherwise the output says it is unverified).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

fn print_record(verb: &str, f: &RecordFile, json: bool) -> anyhow::Result<()> {
    if json {
        super::print_json(&serde_json::json!({"path": f.path, "record": f.record}))?;
    } else {
        let r = &f.record;
        println!("{verb} {}@{} → {} (sequence {}, expires {}); record {}", r.name, r.channel, r.version, r.sequence, r.expires, f.path.display());
    }
    Ok(())
}

pub fn promote(a: PromoteArgs) -> anyhow::Result<i32> {
    let key = SigningKey::load(&a.key)?;
    let opts = ChannelOptions { now: None, expires_in_days: a.expires_in, lock: a.lock.options() };
    let f = registry::promote(&a.registry, &a.name, &a.version, &a.channel, &key, &opts)?;
    print_record("promoted", &f, a.json)?;
    Ok(0)
}

pub fn rollback(a: RollbackArgs) -> anyhow::Result<i32> {
    let key = SigningKey::load(&a.key)?;
    let opts = ChannelOptions { now: None, expires_in_days: a.expires_in, lock: a.lock.options() };
    let f = registry::rollback(&a.registry, &a.name, &a.channel, &key, &opts)?;
    print_record("rolled back", &f, a.json)?;
    Ok(0)
}

/// JSON of one channel's history (schema: `schemas/channel-history.schema.json`).
pub fn history_json(h: &ChannelHistory) -> serde_json::Value {
    serde_json::json!({
        "name": h.name,
        "channel": h.channel,
        "verified": h.verified,
        "current": h.head().map(|r| r.record.version.clone()),
        "deployment_stack": h.deployment_stack(),
        "records": h.records.iter().map(|r| serde_json::json!({
            "file": r.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "record": r.record,
        })).collect::<Vec<_>>(),
    })
}

pub fn history(a: HistoryArgs) -> anyhow::Result<i32> {
    let key = a.pubkey.as_deref().map(TrustedKey::load).transpose()?;
    let hs = registry::history(&a.registry, &a.name, a.channel.as_deref(), key.as_ref())?;
    if a.json {
        super::print_json(&hs.iter().map(history_json).collect::<Vec<_>>())?;
        return Ok(0);
    }
    if hs.is_empty() {
        println!("{} has no channels in {}", a.name, a.registry.display());
    }
    for h in &hs {
        let head = h.head().map(|r| r.record.version.as_str()).unwrap_or("-");
        println!(
            "{}@{}: runs {head}{}",
            h.name,
            h.channel,
            if h.verified { " (every record verified)" } else { " (NOT VERIFIED: pass --pubkey)" }
        );
        for r in h.records.iter().rev() {
            let x = &r.record;
            println!("  #{:<4} {:<9} {:<10} issued {}  expires {}  sha256 {}…", x.sequence, format!("{:?}", x.action).to_lowercase(), x.version, x.issued, x.expires, &x.archive_sha256[..16]);
        }
    }
    Ok(0)
}
