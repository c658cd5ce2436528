//! Which source made this program, for provenance (the git commit recorded in a run and its
//! package).
//!
//! The commit is read from the checkout when asked, not baked in at build time: baking it in
//! made every commit rebuild the crate. A checkout can move on after the build, so the commit
//! is trusted only while the checkout still holds exactly the files this program was compiled
//! from (the executable's build.rs embeds their digest, [`inputs`]) and those files equal the
//! commit's. A build outside a checkout (a container image) can declare its commit with
//! `VQAD_BUILD_COMMIT` at build time. The executable says which build it is with
//! [`register_build`] (see [`build_identity!`]); a program that does not records no commit.

pub mod inputs;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// What is known of the source this program was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    /// The commit holding this program's build inputs, when that can be shown.
    pub commit: Option<String>,
    /// Whether the checkout had no uncommitted or untracked change at all (not only in the
    /// build inputs), when known.
    pub clean: Option<bool>,
    /// Why `commit` is unknown, when it is.
    pub note: Option<String>,
}

/// What an executable's build.rs recorded about its build.
#[derive(Debug, Clone, Copy)]
pub struct BuildIdentity {
    /// sha256 over the build inputs ([`inputs::build_inputs_digest`]) when it was compiled.
    pub inputs_digest: &'static str,
    /// The workspace it was compiled in.
    pub source_dir: &'static str,
    /// `VQAD_BUILD_COMMIT` at build time, or empty.
    pub declared_commit: &'static str,
}

/// The calling executable's [`BuildIdentity`], from the variables its build.rs set.
#[macro_export]
macro_rules! build_identity {
    () => {
        $crate::source::BuildIdentity {
            inputs_digest: env!("VQAD_SOURCE_DIGEST"),
            source_dir: env!("CARGO_MANIFEST_DIR"),
            declared_commit: env!("VQAD_BUILD_COMMIT"),
        }
    };
}

static BUILD: OnceLock<BuildIdentity> = OnceLock::new();

/// Environment variable naming the checkout to show the commit from (default: the folder the
/// program was compiled in).
pub const SOURCE_DIR_ENV: &str = "VQAD_SOURCE_DIR";

/// Called once by the executable's `main`, before anything records provenance.
pub fn register_build(b: BuildIdentity) {
    let _ = BUILD.set(b);
}

/// This program's source state, worked out once per process.
pub fn source_state() -> &'static SourceState {
    static STATE: OnceLock<SourceState> = OnceLock::new();
    STATE.get_or_init(|| match BUILD.get() {
        None => SourceState { commit: None, clean: None, note: Some("the program did not say which build it is".into()) },
        Some(b) if !b.declared_commit.is_empty() => SourceState {
            commit: Some(b.declared_commit.to_string()),
            clean: None,
            note: Some("commit declared at build time (VQAD_BUILD_COMMIT)".into()),
        },
        Some(b) => match std::env::var_os(SOURCE_DIR_ENV).filter(|d| !d.is_empty()) {
            Some(d) => state_of(Path::new(&d), b.inputs_digest),
            None => state_of(Path::new(b.source_dir), b.inputs_digest),
        },
    })
}

/// The source state of the checkout at `dir` for a program whose build inputs had `digest`.
pub fn state_of(dir: &Path, digest: &str) -> SourceState {
    let unknown = |note: String| SourceState { commit: None, clean: None, note: Some(note) };
    match inputs::build_inputs_digest(dir) {
        Ok(d) if d == digest => {}
        Ok(_) => return unknown(format!("{} has changed since this program was built; rebuild to record a commit", dir.display())),
        Err(e) => return unknown(format!("the source this program was built from is not at {} ({e})", dir.display())),
    }
    let git = |args: &[&str]| -> Option<String> {
        let o = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(head) = git(&["rev-parse", "--verify", "HEAD"]).map(|s| s.trim().to_string()) else {
        return unknown(format!("{} is not a git checkout", dir.display()));
    };
    let all = git(&["status", "--porcelain", "--untracked-files=normal"]);
    let clean = all.as_ref().map(|s| s.trim().is_empty());
    let mut args = vec!["status", "--porcelain", "--untracked-files=normal", "--"];
    args.extend(inputs::ROOTS);
    match git(&args) {
        Some(s) if s.trim().is_empty() => SourceState { commit: Some(head), clean, note: None },
        Some(_) => SourceState {
            commit: None,
            clean,
            note: Some(format!("this program was built from uncommitted changes to {} (HEAD {head})", dir.display())),
        },
        None => unknown("git status failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let o = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// A throw-away checkout with the build inputs' shape, committed.
    fn checkout() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for (p, text) in [("build.rs", "fn main() {}"), ("Cargo.toml", "[package]"), ("Cargo.lock", ""), ("src/lib.rs", "//! x"), ("README.md", "r")] {
            std::fs::create_dir_all(d.join(p).parent().unwrap()).unwrap();
            std::fs::write(d.join(p), text).unwrap();
        }
        git(d, &["init", "-q"]);
        git(d, &["add", "."]);
        git(d, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]);
        t
    }

    fn head(dir: &Path) -> String {
        let o = Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn a_clean_checkout_with_the_built_inputs_gives_its_commit() {
        let t = checkout();
        let digest = inputs::build_inputs_digest(t.path()).unwrap();
        let s = state_of(t.path(), &digest);
        assert_eq!(s, SourceState { commit: Some(head(t.path())), clean: Some(true), note: None });
        // A change outside the build inputs keeps the commit but not cleanliness.
        std::fs::write(t.path().join("README.md"), "changed").unwrap();
        let s = state_of(t.path(), &digest);
        assert_eq!((s.commit, s.clean), (Some(head(t.path())), Some(false)));
    }

    #[test]
    fn sources_changed_after_the_build_or_never_committed_give_no_commit() {
        let t = checkout();
        let built = inputs::build_inputs_digest(t.path()).unwrap();
        // Built, then the checkout moved on: the commit no longer describes the binary.
        std::fs::write(t.path().join("src/lib.rs"), "//! y").unwrap();
        let s = state_of(t.path(), &built);
        assert!(s.commit.is_none() && s.note.as_deref().unwrap().contains("changed since this program was built"), "{s:?}");
        // Built from that uncommitted change: the binary matches the files, not HEAD.
        let now = inputs::build_inputs_digest(t.path()).unwrap();
        let s = state_of(t.path(), &now);
        assert!(s.commit.is_none() && s.note.as_deref().unwrap().contains("uncommitted"), "{s:?}");
        assert_eq!(s.clean, Some(false));
        // An untracked source file counts as uncommitted too.
        git(t.path(), &["checkout", "-q", "src/lib.rs"]);
        std::fs::write(t.path().join("src/new.rs"), "").unwrap();
        let s = state_of(t.path(), &inputs::build_inputs_digest(t.path()).unwrap());
        assert!(s.commit.is_none(), "{s:?}");
    }

    #[test]
    fn the_digest_covers_names_and_contents() {
        let t = checkout();
        let a = inputs::build_inputs_digest(t.path()).unwrap();
        std::fs::rename(t.path().join("src/lib.rs"), t.path().join("src/main.rs")).unwrap();
        let b = inputs::build_inputs_digest(t.path()).unwrap();
        assert_ne!(a, b);
        assert_eq!(inputs::build_inputs(t.path()).unwrap(), ["Cargo.lock", "Cargo.toml", "build.rs", "src/main.rs"]);
    }
}
