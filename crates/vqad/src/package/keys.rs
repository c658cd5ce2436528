//! ECDSA P-256 keys in the PEM forms that openssl and `model_signing` read: PKCS#8 private
//! keys, SubjectPublicKeyInfo public keys.
//!
//! The algorithm is pinned by the key type: a [`TrustedKey`] is always P-256 with SHA-256,
//! whatever a signature file claims, so a package cannot pick a weaker algorithm.

use super::{sha256_hex, PackageError};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A private signing key. Its `Debug` never prints the secret.
pub struct SigningKey {
    inner: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(P-256, public {})", self.public().fingerprint())
    }
}

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, what [`keygen`] and
    /// `openssl genpkey` write) or SEC1 (`BEGIN EC PRIVATE KEY`, `openssl ecparam -genkey`).
    pub fn load(path: &Path) -> Result<Self, PackageError> {
        let text = std::fs::read_to_string(path).map_err(|e| PackageError::io(path, e))?;
        Self::from_pem(&text).map_err(|e| match e {
            PackageError::KeyParse { reason, .. } => PackageError::KeyParse { path: path.into(), reason },
            PackageError::KeyEncrypted { .. } => PackageError::KeyEncrypted { path: path.into() },
            other => other,
        })
    }

    /// Parses a PEM private key (see [`SigningKey::load`]).
    pub fn from_pem(text: &str) -> Result<Self, PackageError> {
        let bad = |reason: String| PackageError::KeyParse { path: PathBuf::new(), reason };
        if text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(PackageError::KeyEncrypted { path: PathBuf::new() });
        }
        let secret = if text.contains("BEGIN EC PRIVATE KEY") {
            p256::SecretKey::from_sec1_pem(text).map_err(|e| bad(format!("not a SEC1 P-256 private key: {e}")))?
        } else {
            p256::SecretKey::from_pkcs8_pem(text)
                .map_err(|e| bad(format!("not a PKCS#8 ECDSA P-256 private key: {e}")))?
        };
        Ok(SigningKey { inner: secret.into() })
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        use rand::TryRngCore;
        loop {
            let mut bytes = [0u8; 32];
            // OsRng failing means no entropy source at all; nothing sensible can continue.
            rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("operating system random source");
            // Rejects zero and values ≥ the group order (probability ~2^-32); draw again.
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return SigningKey { inner: k };
            }
        }
    }

    /// The matching public key.
    pub fn public(&self) -> TrustedKey {
        TrustedKey::from_verifying(*self.inner.verifying_key())
    }

    /// PKCS#8 PEM (LF line endings).
    pub fn to_pkcs8_pem(&self) -> Result<String, PackageError> {
        let secret: p256::SecretKey = self.inner.as_nonzero_scalar().into();
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| PackageError::KeyParse { path: PathBuf::new(), reason: e.to_string() })
    }

    /// ECDSA P-256 / SHA-256 over `msg`, RFC 6979 deterministic, DER encoded (what
    /// `cryptography`'s `ec.ECDSA` produces and `model_signing` verifies).
    pub(crate) fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.inner.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

/// A public key a package must be signed with.
#[derive(Clone)]
pub struct TrustedKey {
    inner: p256::ecdsa::VerifyingKey,
    der: Vec<u8>,
    pem: String,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKey(P-256, {})", self.fingerprint())
    }
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl TrustedKey {
    /// Reads a SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`) holding a P-256 key.
    pub fn load(path: &Path) -> Result<Self, PackageError> {
        let text = std::fs::read_to_string(path).map_err(|e| PackageError::io(path, e))?;
        Self::from_pem(&text).map_err(|e| match e {
            PackageError::KeyParse { reason, .. } => PackageError::KeyParse { path: path.into(), reason },
            other => other,
        })
    }

    /// Parses a SubjectPublicKeyInfo PEM; anything but P-256 is refused.
    pub fn from_pem(text: &str) -> Result<Self, PackageError> {
        let key = p256::PublicKey::from_public_key_pem(text).map_err(|e| PackageError::KeyParse {
            path: PathBuf::new(),
            reason: format!("not an ECDSA P-256 public key (SubjectPublicKeyInfo PEM): {e}"),
        })?;
        Ok(Self::from_verifying(key.into()))
    }

    fn from_verifying(inner: p256::ecdsa::VerifyingKey) -> Self {
        let public = p256::PublicKey::from(&inner);
        // Encoding a valid point cannot fail.
        let der = public.to_public_key_der().expect("SPKI encodes").as_bytes().to_vec();
        let pem = public.to_public_key_pem(LineEnding::LF).expect("SPKI encodes");
        TrustedKey { inner, der, pem }
    }

    /// Hex sha256 of the SubjectPublicKeyInfo DER: the key's name in vqad output and indexes.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.der)
    }

    /// Hex sha256 of the PEM text: what `model_signing` writes as the bundle's
    /// `verificationMaterial.publicKey.hint`. Only used to word errors, never to decide.
    pub fn model_signing_hint(&self) -> String {
        sha256_hex(self.pem.as_bytes())
    }

    /// SubjectPublicKeyInfo PEM (LF line endings), as openssl and `cryptography` write it.
    pub fn to_pem(&self) -> &str {
        &self.pem
    }

    /// Verifies a DER ECDSA P-256/SHA-256 signature over `msg`.
    pub(crate) fn verify_der(&self, msg: &[u8], der: &[u8]) -> bool {
        match p256::ecdsa::Signature::from_der(der) {
            Ok(sig) => self.inner.verify(msg, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// Writes a new key pair: `PREFIX.key` (PKCS#8 PEM, mode 0600) and `PREFIX.pub` (SPKI PEM).
/// Refuses if either file exists, so a key in use is never replaced by accident.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf), PackageError> {
    let with_ext = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (key_path, pub_path) = (with_ext(".key"), with_ext(".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() || p.is_symlink() {
            return Err(PackageError::KeyExists { path: p.clone() });
        }
    }
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PackageError::io(dir, e))?;
    }
    let key = SigningKey::generate();
    let private_pem = key.to_pkcs8_pem()?;
    write_new(&key_path, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, key.public().to_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path))
}

/// Creates `path` (never an existing one: `create_new`) with `mode` from the start, so the
/// private key is never readable by others even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PackageError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PackageError::KeyExists { path: path.into() }
        } else {
            PackageError::io(path, e)
        }
    })?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| PackageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_signatures() {
        let k = SigningKey::generate();
        let k2 = SigningKey::from_pem(&k.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(k.public(), k2.public());
        let p = TrustedKey::from_pem(k.public().to_pem()).unwrap();
        let sig = k.sign_der(b"hello");
        assert_eq!(sig, k.sign_der(b"hello"), "RFC 6979 is deterministic");
        assert!(p.verify_der(b"hello", &sig));
        assert!(!p.verify_der(b"hellO", &sig));
        assert!(!SigningKey::generate().public().verify_der(b"hello", &sig));
        assert_eq!(p.fingerprint().len(), 64);
        assert!(format!("{k:?}").starts_with("SigningKey(P-256"));
    }

    #[test]
    fn encrypted_and_foreign_keys_are_refused() {
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(SigningKey::from_pem(enc), Err(PackageError::KeyEncrypted { .. })));
        assert!(matches!(TrustedKey::from_pem("nope"), Err(PackageError::KeyParse { .. })));
    }
}
