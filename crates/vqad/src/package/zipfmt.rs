//! Our own zip writer and a strict zip reader.
//!
//! Writing by hand fixes every byte (entry order, 1980-01-01 00:00 DOS timestamps, unix
//! mode 0644, no extra fields, deflate level 9), so the same inputs give the same archive.
//!
//! Reading by hand is how the verifier sees what the `zip` crate hides: it keeps entries in
//! a map (duplicates collapse, zip2 issue 841), does not compare local headers with the
//! central directory, and has no bomb guard. Here every central-directory record is kept,
//! names are checked, local headers compared, entry spans checked for overlap, sizes capped
//! before inflating and again while inflating, and the CRC checked at the end.

use super::{Limits, PackageError, RATIO_FLOOR};
use std::io::{Read, Write};

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
/// DOS date for 1980-01-01 (the earliest a zip can say); time 00:00:00.
const DOS_DATE_1980: u16 = (1 << 5) | 1;
/// "Made by" unix (3), spec version 2.0, so readers honour the mode bits.
const MADE_BY_UNIX: u16 = (3 << 8) | 20;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Writes a deterministic zip of `entries` (name, bytes), in the given order, deflated.
pub(crate) fn write_zip(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, PackageError> {
    let mut pieces = Vec::with_capacity(entries.len());
    for (name, data) in entries {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(9));
        enc.write_all(data).map_err(|e| PackageError::BadInput(e.to_string()))?;
        let comp = enc.finish().map_err(|e| PackageError::BadInput(e.to_string()))?;
        let size = u32::try_from(data.len())
            .map_err(|_| PackageError::BadInput(format!("{name}: size needs Zip64, which vqad does not write")))?;
        pieces.push(Piece { name, crc: crc32fast::hash(data), size, comp: std::borrow::Cow::Owned(comp) });
    }
    lay_out(&pieces)
}

/// One deflated entry as [`lay_out`] places it.
struct Piece<'a> {
    name: &'a str,
    crc: u32,
    size: u32,
    comp: std::borrow::Cow<'a, [u8]>,
}

/// The one layout vqad writes: every header field but name, CRC, sizes and offset fixed;
/// no extra fields, comments, gaps, or bytes before the first entry or after the end record.
/// The writer uses it, and the verifier rebuilds it to prove an archive has nothing else.
fn lay_out(entries: &[Piece<'_>]) -> Result<Vec<u8>, PackageError> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for Piece { name, crc, size, comp } in entries {
        let (name, crc, usize32) = (*name, *crc, *size);
        let too_big = |what: &str| PackageError::BadInput(format!("{name}: {what} needs Zip64, which vqad does not write"));
        let csize32 = u32::try_from(comp.len()).map_err(|_| too_big("compressed size"))?;
        let offset32 = u32::try_from(out.len()).map_err(|_| too_big("offset"))?;
        let name_len = u16::try_from(name.len()).map_err(|_| PackageError::BadInput(format!("name too long: {name}")))?;

        put32(&mut out, LOCAL_SIG);
        put16(&mut out, 20); // version needed: 2.0 (deflate)
        put16(&mut out, 0); // flags
        put16(&mut out, 8); // deflate
        put16(&mut out, 0); // time 00:00:00
        put16(&mut out, DOS_DATE_1980);
        put32(&mut out, crc);
        put32(&mut out, csize32);
        put32(&mut out, usize32);
        put16(&mut out, name_len);
        put16(&mut out, 0); // extra length
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(comp);

        put32(&mut central, CENTRAL_SIG);
        put16(&mut central, MADE_BY_UNIX);
        put16(&mut central, 20);
        put16(&mut central, 0);
        put16(&mut central, 8);
        put16(&mut central, 0);
        put16(&mut central, DOS_DATE_1980);
        put32(&mut central, crc);
        put32(&mut central, csize32);
        put32(&mut central, usize32);
        put16(&mut central, name_len);
        put16(&mut central, 0); // extra
        put16(&mut central, 0); // comment
        put16(&mut central, 0); // disk
        put16(&mut central, 0); // internal attributes
        put32(&mut central, (S_IFREG | 0o644) << 16);
        put32(&mut central, offset32);
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = u32::try_from(out.len()).map_err(|_| PackageError::BadInput("archive needs Zip64".into()))?;
    let n = u16::try_from(entries.len()).map_err(|_| PackageError::BadInput("too many entries".into()))?;
    let cd_len = central.len() as u32;
    out.extend_from_slice(&central);
    put32(&mut out, EOCD_SIG);
    put16(&mut out, 0);
    put16(&mut out, 0);
    put16(&mut out, n);
    put16(&mut out, n);
    put32(&mut out, cd_len);
    put32(&mut out, cd_offset);
    put16(&mut out, 0);
    Ok(out)
}

/// Refuses an archive that is not byte for byte the layout [`write_zip`] gives `order` (the
/// entries in the order the package format fixes), keeping each entry's compressed bytes.
/// The signature covers file contents, not the container; without this, bytes could ride
/// along unsigned (zip comments, extra fields, gaps, prefixes: polyglot files) and the same
/// signed package would exist as many different files with different archive digests.
/// Deflate itself is not re-run: a vqad with another deflate backend must still verify
/// packages signed before it.
pub(crate) fn check_canonical(data: &[u8], order: &[&Entry]) -> Result<(), PackageError> {
    let mut pieces = Vec::with_capacity(order.len());
    for e in order {
        if e.method != 8 {
            return Err(PackageError::NonCanonical(format!("entry '{}' is stored, vqad deflates every entry", e.name)));
        }
        let comp = &data[e.data_start as usize..(e.data_start + e.compressed) as usize];
        pieces.push(Piece { name: &e.name, crc: e.crc, size: e.size as u32, comp: std::borrow::Cow::Borrowed(comp) });
    }
    let expected = lay_out(&pieces)?;
    if expected.as_slice() == data {
        return Ok(());
    }
    let at = expected.iter().zip(data).position(|(a, b)| a != b).unwrap_or(expected.len().min(data.len()));
    let mut where_ = "the central directory or end record".to_string();
    if at == 0 {
        where_ = "the start of the file".into();
    } else if at >= expected.len() {
        where_ = "after the end record (trailing bytes or a comment)".into();
    }
    let mut by_offset: Vec<&&Entry> = order.iter().collect();
    by_offset.sort_by_key(|e| e.header_offset);
    if let Some(e) = by_offset.iter().rev().find(|e| (e.header_offset as usize) <= at && at < (e.data_start + e.compressed) as usize) {
        where_ = format!("the local header or data of '{}'", e.name);
    }
    let names: Vec<&str> = order.iter().map(|e| e.name.as_str()).collect();
    let in_order = by_offset.iter().map(|e| e.name.as_str()).eq(names.iter().copied());
    let hint = if in_order { String::new() } else { format!("; entries must be in the order {}", names.join(", ")) };
    Err(PackageError::NonCanonical(format!(
        "first difference at byte {at}, in {where_}{hint} (extra fields, comments, gaps, other header values or bytes outside the entries)"
    )))
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// A little-endian reader over a slice that reports running off the end as truncation.
struct Cur<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PackageError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| PackageError::Truncated(format!("{} runs past the end of the data", self.what)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, PackageError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PackageError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// One central-directory record, checked against its local header.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub method: u16,
    pub crc: u32,
    pub compressed: u64,
    pub size: u64,
    /// Offset of the compressed data (after the local header).
    pub data_start: u64,
    pub header_offset: u64,
}

/// Parses and checks the whole archive structure; inflates nothing.
pub(crate) fn read_directory(data: &[u8], limits: &Limits) -> Result<Vec<Entry>, PackageError> {
    let eocd = find_eocd(data)?;
    let mut c = Cur { data, pos: eocd + 4, what: "end of central directory" };
    let disk = c.u16()?;
    let cd_disk = c.u16()?;
    let n_disk = c.u16()?;
    let n_total = c.u16()?;
    let cd_size = c.u32()?;
    let cd_offset = c.u32()?;
    if n_total == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(PackageError::Zip64Unsupported("end record points to a Zip64 record".into()));
    }
    if disk != 0 || cd_disk != 0 || n_disk != n_total {
        return Err(PackageError::MalformedZip("multi-disk archives are not supported".into()));
    }
    if n_total as usize > limits.max_entries {
        return Err(PackageError::TooManyEntries { count: n_total as u64, limit: limits.max_entries });
    }
    let (cd_offset, cd_size) = (cd_offset as usize, cd_size as usize);
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > eocd) {
        return Err(PackageError::Truncated("central directory lies beyond the end record".into()));
    }
    if cd_offset + cd_size != eocd {
        return Err(PackageError::MalformedZip("bytes between the central directory and the end record".into()));
    }

    let mut c = Cur { data: &data[..eocd], pos: cd_offset, what: "central directory" };
    let mut entries: Vec<Entry> = Vec::new();
    let mut folded: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut total: u64 = 0;
    for _ in 0..n_total {
        if c.u32()? != CENTRAL_SIG {
            return Err(PackageError::MalformedZip("bad central directory record signature".into()));
        }
        let made_by = c.u16()?;
        let _needed = c.u16()?;
        let flags = c.u16()?;
        let method = c.u16()?;
        let _time = c.u16()?;
        let _date = c.u16()?;
        let crc = c.u32()?;
        let compressed = c.u32()?;
        let size = c.u32()?;
        let name_len = c.u16()? as usize;
        let extra_len = c.u16()? as usize;
        let comment_len = c.u16()? as usize;
        let start_disk = c.u16()?;
        let _internal = c.u16()?;
        let external = c.u32()?;
        let header_offset = c.u32()?;
        let name_bytes = c.take(name_len)?;
        c.take(extra_len)?;
        c.take(comment_len)?;

        let name = check_entry_name(name_bytes)?;
        if compressed == 0xFFFF_FFFF || size == 0xFFFF_FFFF || header_offset == 0xFFFF_FFFF {
            return Err(PackageError::Zip64Unsupported(format!("entry '{name}'")));
        }
        if start_disk != 0 {
            return Err(PackageError::MalformedZip(format!("entry '{name}' starts on disk {start_disk}")));
        }
        if entries.iter().any(|e| e.name == name) {
            return Err(PackageError::DuplicateEntry { name });
        }
        if let Some(other) = folded.insert(name.to_lowercase(), name.clone()) {
            return Err(PackageError::DuplicateEntryCaseFolded { name, other });
        }
        // Unix mode lives in the high half of the external attributes; check whatever the
        // "made by" host says, since a hostile writer can claim any.
        let _ = made_by;
        let mode = external >> 16;
        match mode & S_IFMT {
            0 | S_IFREG => {}
            S_IFLNK => return Err(PackageError::SymlinkEntry { name }),
            S_IFDIR => return Err(PackageError::BadName { name, reason: "directory entries are not allowed".into() }),
            _ => return Err(PackageError::SpecialEntry { name, mode }),
        }
        if external & 0x10 != 0 {
            return Err(PackageError::BadName { name, reason: "directory entries are not allowed".into() });
        }
        if flags & 0x41 != 0 {
            return Err(PackageError::EncryptedEntry { name });
        }
        // Allowed: deflate level hints (bits 1-2) and UTF-8 names (bit 11). A data
        // descriptor (bit 3) or anything else is not what vqad writes.
        if flags & !0x0806 != 0 {
            return Err(PackageError::UnsupportedFlags { name, flags });
        }
        if method != 0 && method != 8 {
            return Err(PackageError::UnsupportedMethod { name, method });
        }
        let (compressed, size) = (compressed as u64, size as u64);
        if method == 0 && compressed != size {
            return Err(PackageError::MalformedZip(format!("stored entry '{name}' has different sizes")));
        }
        if size > limits.max_entry {
            return Err(PackageError::EntryTooLarge { name, size, limit: limits.max_entry });
        }
        total = total.saturating_add(size);
        if total > limits.max_total {
            return Err(PackageError::TotalTooLarge { limit: limits.max_total });
        }
        if size > RATIO_FLOOR && size > limits.max_ratio.saturating_mul(compressed.max(1)) {
            return Err(PackageError::RatioTooHigh { name, limit: limits.max_ratio });
        }
        entries.push(Entry { name, method, crc, compressed, size, data_start: 0, header_offset: header_offset as u64 });
    }
    if c.pos != cd_offset + cd_size {
        return Err(PackageError::MalformedZip("central directory size disagrees with its records".into()));
    }

    // Local headers: must agree with the central directory, and lie before it.
    for e in entries.iter_mut() {
        let mut l = Cur { data: &data[..cd_offset], pos: e.header_offset as usize, what: "local header" };
        let mismatch = |field: &str| PackageError::LocalHeaderMismatch { name: e.name.clone(), field: field.into() };
        if e.header_offset as usize + 30 > cd_offset {
            return Err(PackageError::Truncated(format!("local header of '{}' lies beyond the entry data", e.name)));
        }
        if l.u32()? != LOCAL_SIG {
            return Err(mismatch("no local header at the recorded offset"));
        }
        let _needed = l.u16()?;
        let flags = l.u16()?;
        let method = l.u16()?;
        let _time = l.u16()?;
        let _date = l.u16()?;
        let crc = l.u32()?;
        let csize = l.u32()?;
        let usize = l.u32()?;
        let name_len = l.u16()? as usize;
        let extra_len = l.u16()? as usize;
        let name = l.take(name_len)?;
        l.take(extra_len)?;
        if name != e.name.as_bytes() {
            return Err(mismatch(&format!("local name '{}'", String::from_utf8_lossy(name))));
        }
        if method != e.method {
            return Err(mismatch(&format!("local method {method}, central {}", e.method)));
        }
        if flags & 0x41 != 0 {
            return Err(PackageError::EncryptedEntry { name: e.name.clone() });
        }
        // With no data descriptor (refused above), the local header must repeat these.
        if crc != e.crc {
            return Err(mismatch(&format!("local CRC {crc:#010x}, central {:#010x}", e.crc)));
        }
        if csize as u64 != e.compressed || usize as u64 != e.size {
            return Err(mismatch(&format!(
                "local sizes {csize}/{usize}, central {}/{} (compressed/uncompressed)",
                e.compressed, e.size
            )));
        }
        e.data_start = l.pos as u64;
        if e.data_start + e.compressed > cd_offset as u64 {
            return Err(PackageError::Truncated(format!("data of '{}' runs into the central directory", e.name)));
        }
    }
    let mut spans: Vec<(u64, u64, &str)> =
        entries.iter().map(|e| (e.header_offset, e.data_start + e.compressed, e.name.as_str())).collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(PackageError::OverlappingEntries { first: w[0].2.into(), second: w[1].2.into() });
        }
    }
    Ok(entries)
}

/// The end-of-central-directory record: the last one whose comment length reaches exactly
/// to the end of the file.
fn find_eocd(data: &[u8]) -> Result<usize, PackageError> {
    let looks_like_zip = data.len() >= 4 && data[..4] == LOCAL_SIG.to_le_bytes();
    if data.len() >= EOCD_LEN {
        let lowest = data.len().saturating_sub(EOCD_LEN + 0xFFFF);
        for pos in (lowest..=data.len() - EOCD_LEN).rev() {
            if data[pos..pos + 4] == EOCD_SIG.to_le_bytes() {
                let comment = u16::from_le_bytes([data[pos + 20], data[pos + 21]]) as usize;
                if pos + EOCD_LEN + comment == data.len() {
                    return Ok(pos);
                }
            }
        }
    }
    if looks_like_zip {
        Err(PackageError::Truncated("no end of central directory record".into()))
    } else {
        Err(PackageError::NotAZip(format!("{} bytes with no zip structure", data.len())))
    }
}

/// Entry names vqad accepts: UTF-8, relative, flat, no `..`, no backslash, printable.
fn check_entry_name(raw: &[u8]) -> Result<String, PackageError> {
    let name = std::str::from_utf8(raw).map_err(|_| PackageError::NonUtf8Name { hex: hex::encode(raw) })?.to_string();
    if name.starts_with('/') || (name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic()) {
        return Err(PackageError::AbsolutePath { name });
    }
    if name.contains('\\') {
        return Err(PackageError::Backslash { name });
    }
    if name.split('/').any(|c| c == "..") {
        return Err(PackageError::PathTraversal { name });
    }
    let bad = |reason: &str| PackageError::BadName { name: name.clone(), reason: reason.into() };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.ends_with('/') {
        return Err(bad("directory entries are not allowed"));
    }
    if name.contains('/') {
        return Err(bad("packages are flat; no folders"));
    }
    if name == "." || name.chars().any(|c| c.is_control() || c == ':') {
        return Err(bad("control characters, ':' and '.' are not allowed"));
    }
    Ok(name)
}

/// Inflates one entry with every cap applied while streaming; checks size and CRC at the
/// end. `total` is the running uncompressed total across entries.
pub(crate) fn read_entry(data: &[u8], e: &Entry, limits: &Limits, cap: u64, total: &mut u64) -> Result<Vec<u8>, PackageError> {
    let comp = &data[e.data_start as usize..(e.data_start + e.compressed) as usize];
    let cap = cap.min(limits.max_entry);
    if e.size > cap {
        return Err(PackageError::EntryTooLarge { name: e.name.clone(), size: e.size, limit: cap });
    }
    let out = match e.method {
        0 => inflate_capped(&mut &comp[..], e, limits, total)?,
        8 => {
            let mut d = flate2::read::DeflateDecoder::new(comp);
            let out = inflate_capped(&mut d, e, limits, total)?;
            // Bytes after the end of the deflate stream would ride along unchecked.
            if d.total_in() != comp.len() as u64 {
                return Err(PackageError::CorruptData {
                    name: e.name.clone(),
                    reason: format!("{} bytes follow the end of the deflate stream", comp.len() as u64 - d.total_in()),
                });
            }
            // Nor may the bits the inflater skipped (end padding, stored-block alignment).
            super::deflate_end::check_filler_bits(comp)
                .map_err(|reason| PackageError::CorruptData { name: e.name.clone(), reason })?;
            out
        }
        m => return Err(PackageError::UnsupportedMethod { name: e.name.clone(), method: m }),
    };
    if crc32fast::hash(&out) != e.crc {
        return Err(PackageError::CrcMismatch { name: e.name.clone() });
    }
    Ok(out)
}

/// Reads `reader` to the end under every cap, checking the declared size.
fn inflate_capped(reader: &mut impl Read, e: &Entry, limits: &Limits, total: &mut u64) -> Result<Vec<u8>, PackageError> {
    let mut out = Vec::with_capacity(e.size.min(64 << 20) as usize);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|err| PackageError::CorruptData { name: e.name.clone(), reason: err.to_string() })?;
        if n == 0 {
            break;
        }
        let now = out.len() as u64 + n as u64;
        if now > e.size {
            // The entry lies about its size: stop before it can grow further.
            return Err(PackageError::SizeMismatch {
                name: e.name.clone(),
                declared: e.size,
                actual: format!("more than {}", e.size),
            });
        }
        *total += n as u64;
        if *total > limits.max_total {
            return Err(PackageError::TotalTooLarge { limit: limits.max_total });
        }
        if now > RATIO_FLOOR && now > limits.max_ratio.saturating_mul(e.compressed.max(1)) {
            return Err(PackageError::RatioTooHigh { name: e.name.clone(), limit: limits.max_ratio });
        }
        out.extend_from_slice(&buf[..n]);
    }
    if out.len() as u64 != e.size {
        return Err(PackageError::SizeMismatch { name: e.name.clone(), declared: e.size, actual: out.len().to_string() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_it_reads() {
        let z = write_zip(&[("a.txt", b"hello hello hello"), ("b", b"")]).unwrap();
        let l = Limits::default();
        let es = read_directory(&z, &l).unwrap();
        assert_eq!(es.len(), 2);
        let mut t = 0;
        assert_eq!(read_entry(&z, &es[0], &l, u64::MAX, &mut t).unwrap(), b"hello hello hello");
        assert_eq!(read_entry(&z, &es[1], &l, u64::MAX, &mut t).unwrap(), b"");
        assert_eq!(write_zip(&[("a.txt", b"hello hello hello"), ("b", b"")]).unwrap(), z);
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(check_entry_name(b"/etc/x"), Err(PackageError::AbsolutePath { .. })));
        assert!(matches!(check_entry_name(b"C:x"), Err(PackageError::AbsolutePath { .. })));
        assert!(matches!(check_entry_name(b"a\\b"), Err(PackageError::Backslash { .. })));
        assert!(matches!(check_entry_name(b"../x"), Err(PackageError::PathTraversal { .. })));
        assert!(matches!(check_entry_name(b"\xff"), Err(PackageError::NonUtf8Name { .. })));
        assert!(matches!(check_entry_name(b"a/b"), Err(PackageError::BadName { .. })));
        assert_eq!(check_entry_name(b"encoder.onnx").unwrap(), "encoder.onnx");
    }

    #[test]
    fn truncation_is_reported() {
        let z = write_zip(&[("a", b"xyz")]).unwrap();
        for cut in [z.len() - 1, z.len() / 2, 10] {
            let e = read_directory(&z[..cut], &Limits::default()).unwrap_err();
            assert!(matches!(e, PackageError::Truncated(_)), "{cut}: {e}");
        }
        assert!(matches!(read_directory(b"hello", &Limits::default()), Err(PackageError::NotAZip(_))));
    }
}
