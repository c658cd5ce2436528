//! A mutation harness for the package verifier, shared by `tests/package_fuzz.rs` (a fixed
//! CI-sized run) and `examples/fuzz_verifier.rs` (long runs from the command line).
//!
//! It signs one genuine package with a key derived from the seed (so a seed names exactly the
//! same bytes every time), then draws mutants from a ChaCha RNG: byte-level damage, structural
//! rewrites of the zip (reordered, duplicated, renamed entries, edited header fields, bytes
//! before, between or after entries) and semantic attacks (edited files re-zipped under the old
//! signature, a different signer, hostile bundles). Every mutant goes through
//! `vqad::package::verify_bytes` inside `catch_unwind`; a mutant byte-identical to the genuine
//! archive is skipped. The outcome of each is counted per operator and per error kind.
#![allow(dead_code)]

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
use std::io::Write;
use vqad::package::dsse::{bundle_for_payload, sign, PAYLOAD_TYPE};
use vqad::package::intoto::SLSA_PROVENANCE_V1;
use vqad::package::{package_bytes, verify_bytes, Limits, Manifest, ResourceDescriptor, SigningKey, Statement, TrustedKey, PROVENANCE_FILE};

/// Every mutation operator, by name (the names appear in the counts).
pub const OPERATORS: &[&str] = &[
    "bit_flip",
    "byte_set",
    "byte_insert",
    "byte_delete",
    "truncate",
    "bytes_before",
    "bytes_after",
    "zip_comment",
    "gap_between_entries",
    "reorder_entries",
    "duplicate_entry",
    "drop_entry",
    "extra_entry",
    "local_header_field",
    "central_header_field",
    "eocd_field",
    "size_crc_offset",
    "local_extra_field",
    "central_extra_or_comment",
    "stored_instead_of_deflate",
    "deflate_trailing_bytes",
    "deflate_padding_bits",
    "name_dotdot",
    "name_absolute",
    "name_case_fold",
    "name_lookalike",
    "local_name_differs",
    "file_edit_rezip",
    "manifest_edit_rezip",
    "resign_other_key",
    "signature_json_edit",
    "statement_edit_resign",
    "provenance_edit_rezip",
    "provenance_resign",
];

/// One entry of the genuine archive: its header fields and its compressed bytes.
#[derive(Clone, Debug)]
pub struct Piece {
    pub name: Vec<u8>,
    pub local_name: Vec<u8>,
    pub method: u16,
    pub local_method: u16,
    pub flags: u16,
    pub local_flags: u16,
    pub version_needed: u16,
    pub made_by: u16,
    pub time: u16,
    pub date: u16,
    pub crc: u32,
    pub local_crc: u32,
    pub size: u32,
    pub local_size: u32,
    pub csize_central: u32,
    pub local_csize: u32,
    pub external: u32,
    pub internal: u16,
    pub disk: u16,
    pub local_extra: Vec<u8>,
    pub central_extra: Vec<u8>,
    pub comment: Vec<u8>,
    /// Bytes between the previous entry's data and this local header.
    pub gap_before: Vec<u8>,
    pub comp: Vec<u8>,
    /// Offset written in the central record (`None`: the real one).
    pub offset_override: Option<u32>,
}

impl Piece {
    /// An honest deflated entry, laid out as vqad writes it.
    pub fn new(name: &str, data: &[u8]) -> Self {
        let comp = deflate(data, 9);
        let crc = crc32fast::hash(data);
        let n = name.as_bytes().to_vec();
        Piece {
            local_name: n.clone(),
            name: n,
            method: 8,
            local_method: 8,
            flags: 0,
            local_flags: 0,
            version_needed: 20,
            made_by: (3 << 8) | 20,
            time: 0,
            date: (1 << 5) | 1,
            crc,
            local_crc: crc,
            size: data.len() as u32,
            local_size: data.len() as u32,
            csize_central: comp.len() as u32,
            local_csize: comp.len() as u32,
            external: 0o100644 << 16,
            internal: 0,
            disk: 0,
            local_extra: vec![],
            central_extra: vec![],
            comment: vec![],
            gap_before: vec![],
            comp,
            offset_override: None,
        }
    }
}

/// A whole archive as pieces plus what surrounds them.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub prefix: Vec<u8>,
    pub pieces: Vec<Piece>,
    /// Bytes between the last entry and the central directory.
    pub gap_before_cd: Vec<u8>,
    pub zip_comment: Vec<u8>,
    /// Bytes after the end record that the comment length does not cover.
    pub suffix: Vec<u8>,
}

impl Layout {
    /// Serialises the layout, computing offsets, counts and sizes honestly from what is there.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.prefix.clone();
        let mut central = Vec::new();
        for p in &self.pieces {
            out.extend_from_slice(&p.gap_before);
            let offset = out.len() as u32;
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            for v in [p.version_needed, p.local_flags, p.local_method, p.time, p.date] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [p.local_crc, p.local_csize, p.local_size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(p.local_name.len() as u16).to_le_bytes());
            out.extend_from_slice(&(p.local_extra.len() as u16).to_le_bytes());
            out.extend_from_slice(&p.local_name);
            out.extend_from_slice(&p.local_extra);
            out.extend_from_slice(&p.comp);

            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            for v in [p.made_by, p.version_needed, p.flags, p.method, p.time, p.date] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            for v in [p.crc, p.csize_central, p.size] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            for v in [p.name.len() as u16, p.central_extra.len() as u16, p.comment.len() as u16, p.disk, p.internal] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            central.extend_from_slice(&p.external.to_le_bytes());
            central.extend_from_slice(&p.offset_override.unwrap_or(offset).to_le_bytes());
            central.extend_from_slice(&p.name);
            central.extend_from_slice(&p.central_extra);
            central.extend_from_slice(&p.comment);
        }
        out.extend_from_slice(&self.gap_before_cd);
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let n = self.pieces.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&(self.zip_comment.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.zip_comment);
        out.extend_from_slice(&self.suffix);
        out
    }

    fn piece_mut(&mut self, name: &str) -> &mut Piece {
        self.pieces.iter_mut().find(|p| p.name == name.as_bytes()).expect("entry present")
    }
}

pub fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A P-256 key from 32 bytes of the RNG (so a seed fixes every signature: ECDSA here is RFC 6979).
pub fn key_from_rng(rng: &mut ChaCha20Rng) -> SigningKey {
    use p256::pkcs8::EncodePrivateKey;
    loop {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        if let Ok(sk) = p256::SecretKey::from_slice(&b) {
            let pem = sk.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
            return SigningKey::from_pem(&pem).unwrap();
        }
    }
}

/// The genuine package every mutant starts from.
pub struct Target {
    pub bytes: Vec<u8>,
    pub layout: Layout,
    pub manifest: Manifest,
    /// Signed payload files by name (manifest included), and `model.sig`.
    pub files: BTreeMap<String, Vec<u8>>,
    pub signature: Vec<u8>,
    pub key: SigningKey,
    pub trusted: TrustedKey,
    pub other: SigningKey,
}

/// Payload files with some structure (so deflate has real work) but no meaning: the package
/// layer never parses ONNX or npy.
fn payloads(rng: &mut ChaCha20Rng) -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    for (n, len) in [("encoder.onnx", 3000), ("decoder.onnx", 3500), ("pixelsnail.onnx", 4000), ("codebook.npy", 2048)] {
        let mut v = vec![0u8; len];
        for (i, b) in v.iter_mut().enumerate() {
            *b = if rng.random_bool(0.3) { rng.random() } else { (i % 17) as u8 };
        }
        f.insert(n.to_string(), v);
    }
    f
}

/// A provenance statement over `manifest` and `files` (the package layer checks its signature,
/// type and subjects; the predicate is the provenance layer's business).
pub fn provenance_statement(manifest: &Manifest, files: &BTreeMap<String, Vec<u8>>) -> Statement<serde_json::Value> {
    let mut f = files.clone();
    f.remove(PROVENANCE_FILE);
    f.remove("manifest.json");
    let subjects = vqad::package::subject_digests(manifest, &f).unwrap();
    Statement::new(
        subjects.iter().map(|(n, d)| ResourceDescriptor::file(n, d)).collect(),
        SLSA_PROVENANCE_V1,
        serde_json::json!({"buildDefinition": {"buildType": "https://vqad.invalid/build-types/train-package/v1"}}),
    )
}

/// `files` (manifest included) with `provenance` in place and `model.sig` over all of them,
/// signed with `key`.
fn resigned(t: &Target, files: &BTreeMap<String, Vec<u8>>, key: &SigningKey) -> Vec<u8> {
    let digests: BTreeMap<String, String> = files.iter().map(|(n, d)| (n.clone(), vqad::fsutil::sha256_hex(d))).collect();
    t.layout_with(files, &sign("bottle-1.0.0", &digests, key).unwrap()).bytes()
}

impl Target {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed_0f7a_26e7);
        let key = key_from_rng(&mut rng);
        let other = key_from_rng(&mut rng);
        let manifest = Manifest::example("bottle", "1.0.0");
        let mut payload = payloads(&mut rng);
        payload.insert(PROVENANCE_FILE.into(), provenance_statement(&manifest, &payload).sign(&key));
        let bytes = package_bytes(&manifest, &payload, &key).unwrap();
        let trusted = key.public();
        let v = verify_bytes(&bytes, &trusted, &Limits::default()).expect("the genuine package verifies");
        assert!(v.provenance.is_some());
        let mut layout = Layout::default();
        for name in vqad::package::entry_order(true) {
            if name != "model.sig" && !v.files.contains_key(name) {
                continue; // a variant entry this package does not carry
            }
            let data = if name == "model.sig" { &v.signature } else { &v.files[name] };
            layout.pieces.push(Piece::new(name, data));
        }
        assert_eq!(layout.bytes(), bytes, "the harness lays archives out exactly as vqad writes them");
        Target { bytes, layout, manifest, files: v.files, signature: v.signature, key, trusted, other }
    }

    /// A layout of `files` (in vqad's order) with the given signature bytes.
    fn layout_with(&self, files: &BTreeMap<String, Vec<u8>>, sig: &[u8]) -> Layout {
        let mut l = Layout::default();
        for name in vqad::package::entry_order(files.contains_key(PROVENANCE_FILE)) {
            if name != "model.sig" && !files.contains_key(name) {
                continue;
            }
            let data: &[u8] = if name == "model.sig" { sig } else { &files[name] };
            l.pieces.push(Piece::new(name, data));
        }
        l
    }
}

/// Outcome of one mutant.
#[derive(Debug)]
pub enum Outcome {
    /// Byte-identical to the genuine archive: not a mutant.
    Skipped,
    Refused(&'static str),
    /// Verified, and the signed files or the signature differ from the genuine ones: a hole.
    Accepted,
    /// Verified with every signed file and the signature byte-identical to the genuine ones:
    /// another deflate encoding of the same bytes (accepted by design, see the README).
    Reencoded,
    Panicked(String),
}

/// Counts of a run.
#[derive(Debug, Default)]
pub struct Stats {
    pub mutants: u64,
    pub skipped: u64,
    /// operator → (mutants, refused)
    pub per_operator: BTreeMap<&'static str, (u64, u64)>,
    /// error kind → count
    pub per_error: BTreeMap<&'static str, u64>,
    /// (operator, mutant index, archive) of every acceptance that changed a signed byte.
    pub accepted: Vec<(&'static str, u64, Vec<u8>)>,
    /// (operator, mutant index, archive) of accepted re-encodings of the same signed bytes.
    pub reencoded: Vec<(&'static str, u64, Vec<u8>)>,
    pub panics: Vec<(&'static str, u64, String)>,
}

impl Stats {
    pub fn report(&self) -> String {
        let mut s = format!(
            "mutants: {} (skipped as identical: {}), refused: {}, accepted: {}, re-encodings of the same signed bytes accepted: {}, panics: {}\nper operator (mutants / refused):\n",
            self.mutants,
            self.skipped,
            self.per_operator.values().map(|v| v.1).sum::<u64>(),
            self.accepted.len(),
            self.reencoded.len(),
            self.panics.len()
        );
        for (op, (n, r)) in &self.per_operator {
            s += &format!("  {op:<28} {n:>9} / {r}\n");
        }
        s += "per error kind:\n";
        for (k, n) in &self.per_error {
            s += &format!("  {k:<28} {n:>9}\n");
        }
        for (op, i, _) in self.accepted.iter().take(10) {
            s += &format!("ACCEPTED: mutant #{i} by {op}\n");
        }
        for (op, i, _) in self.reencoded.iter().take(10) {
            s += &format!("re-encoded (same signed bytes, accepted): mutant #{i} by {op}\n");
        }
        for (op, i, m) in self.panics.iter().take(10) {
            s += &format!("PANIC: mutant #{i} by {op}: {m}\n");
        }
        s
    }
}

/// Runs `n` mutants from `seed`; operators are drawn in turn so every one runs n/ops times.
pub fn run(seed: u64, n: u64) -> Stats {
    let target = Target::new(seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut stats = Stats::default();
    let mut kinds: BTreeMap<String, &'static str> = BTreeMap::new();
    // Silence the default panic message for caught panics; they are counted and reported.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..n {
        if n > 100_000 && i > 0 && i % 100_000 == 0 {
            eprintln!(
                "{i} mutants: {} accepted, {} re-encodings, {} panics",
                stats.accepted.len(),
                stats.reencoded.len(),
                stats.panics.len()
            );
        }
        let op = OPERATORS[(i % OPERATORS.len() as u64) as usize];
        let mutant = mutate(op, &target, &mut rng);
        let outcome = if mutant == target.bytes {
            Outcome::Skipped
        } else {
            match std::panic::catch_unwind(|| verify_bytes(&mutant, &target.trusted, &Limits::default())) {
                Ok(Ok(v)) if v.files == target.files && v.signature == target.signature => Outcome::Reencoded,
                Ok(Ok(_)) => Outcome::Accepted,
                Ok(Err(e)) => {
                    let k = format!("{e:?}");
                    let k = k.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("?").to_string();
                    Outcome::Refused(kinds.entry(k.clone()).or_insert_with(|| Box::leak(k.into_boxed_str())))
                }
                Err(p) => Outcome::Panicked(
                    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default(),
                ),
            }
        };
        match outcome {
            Outcome::Skipped => stats.skipped += 1,
            o => {
                stats.mutants += 1;
                let c = stats.per_operator.entry(op).or_default();
                c.0 += 1;
                match o {
                    Outcome::Refused(k) => {
                        c.1 += 1;
                        *stats.per_error.entry(k).or_default() += 1;
                    }
                    Outcome::Accepted => stats.accepted.push((op, i, mutant)),
                    Outcome::Reencoded => stats.reencoded.push((op, i, mutant)),
                    Outcome::Panicked(m) => stats.panics.push((op, i, m)),
                    Outcome::Skipped => unreachable!(),
                }
            }
        }
    }
    std::panic::set_hook(prev);
    stats
}

fn pick<'a, T>(rng: &mut ChaCha20Rng, v: &'a [T]) -> &'a T {
    &v[rng.random_range(0..v.len())]
}

fn random_bytes(rng: &mut ChaCha20Rng, max: usize) -> Vec<u8> {
    let n = rng.random_range(1..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// Values that break parsers more often than random ones.
fn interesting_u32(rng: &mut ChaCha20Rng, real: u32) -> u32 {
    { let r = rng.random(); *pick(rng, &[0, 1, real.wrapping_add(1), real.wrapping_sub(1), real ^ 0x8000_0000, 0xFFFF, 0xFFFF_FFFF, 0x7FFF_FFFF, real.wrapping_mul(2), r]) }
}

fn interesting_u16(rng: &mut ChaCha20Rng, real: u16) -> u16 {
    { let r = rng.random(); *pick(rng, &[0, 1, real.wrapping_add(1), real.wrapping_sub(1), 0xFFFF, 0x8000, 0x0800, 0x0008, r]) }
}

/// Produces one mutant of the genuine archive with operator `op`.
pub fn mutate(op: &str, t: &Target, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut b = t.bytes.clone();
    let len = b.len();
    let mut l = t.layout.clone();
    let entry = rng.random_range(0..l.pieces.len());
    match op {
        "bit_flip" => {
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            b
        }
        "byte_set" => {
            let i = rng.random_range(0..len);
            b[i] = { let r = rng.random(); *pick(rng, &[0u8, 0xFF, 0x7F, 0x80, 0x01, r]) };
            b
        }
        "byte_insert" => {
            let i = rng.random_range(0..=len);
            let ins = random_bytes(rng, 16);
            b.splice(i..i, ins);
            b
        }
        "byte_delete" => {
            let i = rng.random_range(0..len);
            let n = rng.random_range(1..=16).min(len - i);
            b.drain(i..i + n);
            b
        }
        "truncate" => {
            b.truncate(rng.random_range(0..len));
            b
        }
        "bytes_before" => {
            let mut v = random_bytes(rng, 64);
            if rng.random_bool(0.3) {
                // A second, valid-looking zip in front (polyglot).
                v = t.bytes[..rng.random_range(1..len)].to_vec();
            }
            v.extend_from_slice(&b);
            v
        }
        "bytes_after" => {
            if rng.random_bool(0.3) {
                b.extend_from_slice(&t.bytes);
            } else {
                b.extend(random_bytes(rng, 64));
            }
            b
        }
        "zip_comment" => {
            l.zip_comment = random_bytes(rng, 64);
            l.bytes()
        }
        "gap_between_entries" => {
            let gap = random_bytes(rng, 32);
            if rng.random_bool(0.2) {
                l.gap_before_cd = gap;
            } else if rng.random_bool(0.2) {
                l.prefix = gap;
            } else {
                l.pieces[entry].gap_before = gap;
            }
            l.bytes()
        }
        "reorder_entries" => {
            let j = rng.random_range(0..l.pieces.len());
            if j == entry {
                l.pieces.reverse();
            } else {
                l.pieces.swap(entry, j);
            }
            l.bytes()
        }
        "duplicate_entry" => {
            let mut dup = l.pieces[entry].clone();
            if rng.random_bool(0.5) {
                // Same name, other content (e.g. a second manifest with another threshold).
                let mut data = t.files.get(std::str::from_utf8(&dup.name).unwrap()).cloned().unwrap_or_else(|| t.signature.clone());
                if !data.is_empty() {
                    let k = rng.random_range(0..data.len());
                    data[k] ^= 1;
                }
                dup = Piece::new(std::str::from_utf8(&dup.name).unwrap(), &data);
            }
            let at = rng.random_range(0..=l.pieces.len());
            l.pieces.insert(at, dup);
            l.bytes()
        }
        "drop_entry" => {
            l.pieces.remove(entry);
            l.bytes()
        }
        "extra_entry" => {
            let name = *pick(rng, &["extra.bin", "payload.py", "README", "model.sig.bak", "encoder.onnx.orig", "x"]);
            let at = rng.random_range(0..=l.pieces.len());
            l.pieces.insert(at, Piece::new(name, &random_bytes(rng, 100)));
            l.bytes()
        }
        "local_header_field" => {
            let p = &mut l.pieces[entry];
            match rng.random_range(0..8) {
                0 => p.version_needed = interesting_u16(rng, p.version_needed),
                1 => p.local_flags = interesting_u16(rng, p.local_flags),
                2 => p.local_method = interesting_u16(rng, p.local_method),
                3 => p.time = interesting_u16(rng, p.time),
                4 => p.date = interesting_u16(rng, p.date),
                5 => p.local_crc = interesting_u32(rng, p.local_crc),
                6 => p.local_csize = interesting_u32(rng, p.local_csize),
                _ => p.local_size = interesting_u32(rng, p.local_size),
            }
            l.bytes()
        }
        "central_header_field" => {
            let p = &mut l.pieces[entry];
            match rng.random_range(0..8) {
                0 => p.made_by = interesting_u16(rng, p.made_by),
                1 => p.flags = interesting_u16(rng, p.flags),
                2 => p.method = interesting_u16(rng, p.method),
                3 => p.disk = interesting_u16(rng, p.disk),
                4 => p.internal = interesting_u16(rng, p.internal),
                5 => p.external = { let r = rng.random(); *pick(rng, &[0, 0o120777 << 16, 0o040755 << 16, 0o100755 << 16, 0o100644 << 16 | 0x10, 0o060644 << 16, r]) },
                6 => p.date = interesting_u16(rng, p.date),
                _ => p.version_needed = interesting_u16(rng, p.version_needed),
            }
            l.bytes()
        }
        "eocd_field" => {
            // Offsets into the end record: disk numbers, counts, size, offset, comment length.
            let eocd = len - 22;
            let field = *pick(rng, &[4usize, 6, 8, 10, 12, 16, 20]);
            if field == 12 || field == 16 {
                let real = u32::from_le_bytes(b[eocd + field..eocd + field + 4].try_into().unwrap());
                b[eocd + field..eocd + field + 4].copy_from_slice(&interesting_u32(rng, real).to_le_bytes());
            } else {
                let real = u16::from_le_bytes([b[eocd + field], b[eocd + field + 1]]);
                b[eocd + field..eocd + field + 2].copy_from_slice(&interesting_u16(rng, real).to_le_bytes());
            }
            b
        }
        "size_crc_offset" => {
            let p = &mut l.pieces[entry];
            let both = rng.random_bool(0.5);
            match rng.random_range(0..4) {
                0 => {
                    p.crc = interesting_u32(rng, p.crc);
                    if both {
                        p.local_crc = p.crc;
                    }
                }
                1 => {
                    p.size = interesting_u32(rng, p.size);
                    if both {
                        p.local_size = p.size;
                    }
                }
                2 => {
                    p.csize_central = interesting_u32(rng, p.csize_central);
                    if both {
                        p.local_csize = p.csize_central;
                    }
                }
                _ => p.offset_override = Some(interesting_u32(rng, 0)),
            }
            l.bytes()
        }
        "local_extra_field" => {
            let p = &mut l.pieces[entry];
            // A well-formed extra block (id, length, data) or garbage.
            let data = random_bytes(rng, 24);
            let id: u16 = { let r = rng.random(); *pick(rng, &[0x5455u16, 0x7875, 0x0001, 0x000a, r]) };
            p.local_extra = if rng.random_bool(0.7) {
                let mut e = id.to_le_bytes().to_vec();
                e.extend_from_slice(&(data.len() as u16).to_le_bytes());
                e.extend(data);
                e
            } else {
                data
            };
            l.bytes()
        }
        "central_extra_or_comment" => {
            let p = &mut l.pieces[entry];
            if rng.random_bool(0.5) {
                p.comment = random_bytes(rng, 24);
            } else {
                let data = random_bytes(rng, 16);
                let mut e = 0x5455u16.to_le_bytes().to_vec();
                e.extend_from_slice(&(data.len() as u16).to_le_bytes());
                e.extend(data);
                p.central_extra = e;
            }
            l.bytes()
        }
        "stored_instead_of_deflate" => {
            // Same content, stored: a valid zip whose files all still hash right.
            let name = String::from_utf8(l.pieces[entry].name.clone()).unwrap();
            let data = t.files.get(&name).cloned().unwrap_or_else(|| t.signature.clone());
            let p = &mut l.pieces[entry];
            p.comp = data;
            p.method = 0;
            p.local_method = 0;
            p.csize_central = p.size;
            p.local_csize = p.size;
            l.bytes()
        }
        "deflate_trailing_bytes" => {
            // Bytes after the end of the deflate stream, counted in the compressed size.
            let p = &mut l.pieces[entry];
            p.comp.extend(random_bytes(rng, 16));
            p.csize_central = p.comp.len() as u32;
            p.local_csize = p.csize_central;
            l.bytes()
        }
        "deflate_padding_bits" => {
            // The bits after the final end-of-block code, which inflaters skip.
            let p = &mut l.pieces[entry];
            let last = p.comp.len() - 1;
            p.comp[last] ^= 0x80 >> rng.random_range(0..4);
            l.bytes()
        }
        "name_dotdot" | "name_absolute" | "name_case_fold" | "name_lookalike" => {
            let real = String::from_utf8(l.pieces[entry].name.clone()).unwrap();
            let new = match op {
                "name_dotdot" => pick(rng, &[format!("../{real}"), format!("a/../{real}"), format!("..\\{real}"), "..".into(), format!("./{real}")]).clone(),
                "name_absolute" => pick(rng, &[format!("/{real}"), format!("C:{real}"), format!("c:/{real}"), format!("//server/{real}"), format!("\\{real}")]).clone(),
                "name_case_fold" => pick(rng, &[real.to_uppercase(), capitalise(&real), real.replace('o', "O"), format!("{real}\u{0}")]).clone(),
                _ => pick(rng, &lookalikes(&real)).clone(),
            };
            let p = &mut l.pieces[entry];
            p.name = new.clone().into_bytes();
            if rng.random_bool(0.7) {
                p.local_name = p.name.clone();
            }
            if rng.random_bool(0.3) {
                // Keep the genuine entry too: the look-alike is an addition.
                let mut keep = t.layout.pieces[entry].clone();
                keep.gap_before.clear();
                l.pieces.insert(entry, keep);
            }
            l.bytes()
        }
        "local_name_differs" => {
            let other = rng.random_range(0..l.pieces.len());
            let new = if other != entry { l.pieces[other].name.clone() } else { b"evil.onnx".to_vec() };
            l.pieces[entry].local_name = new;
            l.bytes()
        }
        "file_edit_rezip" => {
            // Change a graph or the codebook, re-zip honestly, keep the old signature.
            let names = ["encoder.onnx", "decoder.onnx", "pixelsnail.onnx", "codebook.npy"];
            let name = *pick(rng, &names);
            let mut files = t.files.clone();
            let d = files.get_mut(name).unwrap();
            match rng.random_range(0..3) {
                0 => {
                    let i = rng.random_range(0..d.len());
                    d[i] ^= 1 << rng.random_range(0..8);
                }
                1 => d.push(0),
                _ => {
                    d.pop();
                }
            }
            t.layout_with(&files, &t.signature).bytes()
        }
        "manifest_edit_rezip" => {
            let mut m: serde_json::Value = serde_json::from_slice(&t.files["manifest.json"]).unwrap();
            match rng.random_range(0..6) {
                0 => m["detection"]["pixel_threshold"] = serde_json::json!(rng.random_range(0.0..1.0)),
                1 => m["detection"]["eta"] = serde_json::json!(0.5),
                2 => m["detection"]["min_area"] = serde_json::json!(1_000_000),
                3 => m["version"] = serde_json::json!("1.0.1"),
                4 => m["provenance"]["seed"] = serde_json::json!(7),
                _ => m["detection"]["unknown_field"] = serde_json::json!(true),
            }
            let mut files = t.files.clone();
            let text = if rng.random_bool(0.5) { serde_json::to_vec_pretty(&m).unwrap() } else { serde_json::to_vec(&m).unwrap() };
            files.insert("manifest.json".into(), text);
            t.layout_with(&files, &t.signature).bytes()
        }
        "resign_other_key" => {
            // A complete, valid package, but signed by someone else (maybe with edits).
            let mut files = t.files.clone();
            files.remove("manifest.json");
            let mut m = t.manifest.clone();
            if rng.random_bool(0.5) {
                m.detection.pixel_threshold *= 10.0;
            }
            files.insert(PROVENANCE_FILE.into(), provenance_statement(&m, &files).sign(&t.other));
            package_bytes(&m, &files, &t.other).unwrap()
        }
        "signature_json_edit" => {
            let mut v: serde_json::Value = serde_json::from_slice(&t.signature).unwrap();
            let env = &mut v["dsseEnvelope"];
            match rng.random_range(0..7) {
                0 => env["payloadType"] = serde_json::json!("application/json"),
                1 => {
                    let s = env["signatures"][0].clone();
                    env["signatures"].as_array_mut().unwrap().push(s);
                }
                2 => env["signatures"] = serde_json::json!([]),
                3 => env["signatures"][0]["keyid"] = serde_json::json!("trusted-key-id"),
                4 => {
                    let mut s = env["signatures"][0]["sig"].as_str().unwrap().to_string().into_bytes();
                    let i = rng.random_range(0..s.len().saturating_sub(2).max(1));
                    s[i] = if s[i] == b'A' { b'B' } else { b'A' };
                    env["signatures"][0]["sig"] = serde_json::json!(String::from_utf8(s).unwrap());
                }
                5 => v["mediaType"] = serde_json::json!("application/vnd.dev.sigstore.bundle+json;version=0.1"),
                _ => {
                    let mut s = env["payload"].as_str().unwrap().to_string().into_bytes();
                    let i = rng.random_range(0..s.len().saturating_sub(2).max(1));
                    s[i] = if s[i] == b'A' { b'B' } else { b'A' };
                    env["payload"] = serde_json::json!(String::from_utf8(s).unwrap());
                }
            }
            let sig = serde_json::to_vec(&v).unwrap();
            t.layout_with(&t.files, &sig).bytes()
        }
        "statement_edit_resign" => {
            // Statements signed by the *trusted* key that must still be refused: wrong type,
            // empty or partial lists, wrong subject, digests of other bytes.
            let digests: BTreeMap<String, String> =
                t.files.iter().map(|(n, d)| (n.clone(), vqad::fsutil::sha256_hex(d))).collect();
            let sig = match rng.random_range(0..5) {
                0 => {
                    let mut d = digests.clone();
                    d.remove(*pick(rng, &["encoder.onnx", "codebook.npy", "manifest.json"]));
                    sign("bottle-1.0.0", &d, &t.key).unwrap()
                }
                1 => sign("bottle-2.0.0", &digests, &t.key).unwrap(),
                2 => {
                    let mut d = digests.clone();
                    d.insert("decoder.onnx".into(), vqad::fsutil::sha256_hex(b"other"));
                    sign("bottle-1.0.0", &d, &t.key).unwrap()
                }
                3 => bundle_for_payload(PAYLOAD_TYPE, b"{}", &t.key).unwrap(),
                _ => bundle_for_payload("text/plain", b"hello", &t.key).unwrap(),
            };
            t.layout_with(&t.files, &sig).bytes()
        }
        "provenance_edit_rezip" => {
            // The provenance changed (a field, a subject digest) under the old signatures.
            let mut files = t.files.clone();
            let env: serde_json::Value = serde_json::from_slice(&t.files[PROVENANCE_FILE]).unwrap();
            let mut e = env.clone();
            match rng.random_range(0..3) {
                0 => e["payloadType"] = serde_json::json!("application/json"),
                1 => e["signatures"][0]["keyid"] = serde_json::json!("release"),
                _ => {
                    let mut st = provenance_statement(&t.manifest, &t.files);
                    st.predicate["buildDefinition"]["externalParameters"] = serde_json::json!({"seed": rng.random::<u32>()});
                    use base64::Engine as _;
                    e["payload"] = serde_json::json!(base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec_pretty(&st).unwrap()));
                }
            }
            files.insert(PROVENANCE_FILE.into(), serde_json::to_vec_pretty(&e).unwrap());
            t.layout_with(&files, &t.signature).bytes()
        }
        "provenance_resign" => {
            // Re-signed by the trusted key throughout (model.sig too), and still wrong: the
            // provenance by another key, about other files, of another type, or in a manifest
            // whose format predates it.
            let mut files = t.files.clone();
            let mut st = provenance_statement(&t.manifest, &t.files);
            let mut key = &t.key;
            match rng.random_range(0..7) {
                0 => key = &t.other,
                1 => {
                    st.subject.remove(rng.random_range(0..st.subject.len()));
                }
                2 => {
                    let i = rng.random_range(0..st.subject.len());
                    st.subject[i].digest.insert("sha256".into(), vqad::fsutil::sha256_hex(b"other"));
                }
                3 => st.subject.push(ResourceDescriptor::file(PROVENANCE_FILE, &vqad::fsutil::sha256_hex(&t.files[PROVENANCE_FILE]))),
                4 => st.predicate_type = "https://slsa.dev/provenance/v0.2".into(),
                5 => st.type_ = "https://in-toto.io/Statement/v0.1".into(),
                _ => {
                    let mut m: serde_json::Value = serde_json::from_slice(&t.files["manifest.json"]).unwrap();
                    m["format_version"] = serde_json::json!(rng.random_range(1..=5));
                    let mut mb = serde_json::to_vec_pretty(&m).unwrap();
                    mb.push(b'\n');
                    files.insert("manifest.json".into(), mb);
                    let old: Manifest = serde_json::from_value(m).unwrap();
                    st = provenance_statement(&old, &t.files);
                }
            }
            files.insert(PROVENANCE_FILE.into(), st.sign(key));
            resigned(t, &files, &t.key)
        }
        other => panic!("unknown operator {other}"),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Names that look like `real` to a person but are other strings.
fn lookalikes(real: &str) -> Vec<String> {
    vec![
        real.replacen('e', "\u{0435}", 1),  // Cyrillic е
        real.replacen('o', "\u{043e}", 1),  // Cyrillic о
        real.replacen('.', "\u{2024}", 1),  // one dot leader
        format!("{real}\u{200b}"),          // zero-width space
        format!("\u{feff}{real}"),          // byte order mark
        real.replacen('e', "e\u{0301}", 1), // combining accent
        format!("{real}."),
        format!("{real} "),
        real.replace('n', "\u{ff4e}"),      // fullwidth n
    ]
}
