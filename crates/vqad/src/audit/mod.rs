//! Audit views of verified packages: what changed between two releases ([`diff`]) and a
//! machine-learning bill of materials in CycloneDX 1.6 ([`bom`]).
//!
//! Both take [`VerifiedPackage`](crate::package::VerifiedPackage)s only, so nothing here ever
//! reports on bytes that failed verification. Both are deterministic: the same packages give
//! the same output, byte for byte.

pub mod bom;
pub mod diff;

pub use bom::cyclonedx;
pub use diff::{Change, FieldChange, PackageDiff, Side};
