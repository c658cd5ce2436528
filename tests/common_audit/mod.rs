//! The CycloneDX 1.6 validator (PyPI's cyclonedx-python-lib), shared by the audit and
//! pipeline tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The validator's venv, installed once per cache by tools/setup-audit.sh.
pub fn audit_python() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/setup-audit.sh");
        let out = Command::new("bash").arg(script).output().expect("bash runs");
        assert!(out.status.success(), "tools/setup-audit.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(p.exists(), "{} missing", p.display());
        p
    })
}

const VALIDATE: &str = "
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())
if errors is not None:
    print('INVALID', errors)
    sys.exit(1)
print('valid CycloneDX 1.6')
";

/// Runs the strict CycloneDX 1.6 validator on a BOM file: (valid, output).
pub fn validate_bom(path: &Path) -> (bool, String) {
    let out = Command::new(audit_python()).arg("-c").arg(VALIDATE).arg(path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

