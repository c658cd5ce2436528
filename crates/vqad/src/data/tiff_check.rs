//! Checks a TIFF's first directory before the `tiff` crate reads it.
//!
//! Why: `tiff` 0.11 reads a tag's values into a vector sized by the count the file declares,
//! bounded only by its default 256 MiB (its `ifd_value_size` limit is not enforced), and the
//! `image` crate builds that decoder before any limit can be passed. A 400-byte TIFF whose
//! `StripOffsets` claims 10 million values made it allocate 256 MiB (found by
//! `tests/serve_fuzz.rs`). Here every entry's values must lie inside the file, every strip or
//! tile byte count must fit in it, and what the decoder will allocate for the directory is
//! known before it runs ([`TiffHeader::directory_bytes`]).

/// What the first directory will cost to read.
#[derive(Debug)]
pub struct TiffHeader {
    /// An upper bound on what reading the tags the decoder looks up allocates (each value is
    /// held as a 24-byte enum beside its raw bytes).
    pub directory_bytes: u64,
}

/// Tags the `tiff` and `image` decoders read while opening and decoding an image.
const READ_TAGS: &[u16] = &[254, 256, 257, 258, 259, 262, 273, 274, 277, 278, 279, 284, 317, 322, 323, 324, 325, 330, 338, 339, 347, 530, 34665, 34675, 34853];
const STRIP_OR_TILE_BYTE_COUNTS: [u16; 2] = [279, 325];
/// Bytes of one `tiff::decoder::ifd::Value`, and of a directory entry in its map.
const VALUE_BYTES: u64 = 24;
const ENTRY_BYTES: u64 = 64;

fn type_size(t: u16) -> u64 {
    match t {
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => 1,
    }
}

/// Checks `b` (a whole TIFF file) and returns what its directory costs; `Err` names what is
/// wrong. Files that are not TIFF are not looked at (`Ok` with nothing to add).
pub fn check(b: &[u8]) -> Result<TiffHeader, String> {
    let le = match b.get(..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return Ok(TiffHeader { directory_bytes: 0 }),
    };
    let len = b.len() as u64;
    let rd = |at: u64, n: usize| -> Result<u64, String> {
        let s = usize::try_from(at).ok().and_then(|a| b.get(a..a.checked_add(n)?)).ok_or_else(|| format!("the TIFF directory runs past the end of the {len}-byte file"))?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if le { s[n - 1 - i] } else { s[i] } as u64;
            v = (v << 8) | byte;
        }
        Ok(v)
    };
    let (big, ifd) = match rd(2, 2)? {
        42 => (false, rd(4, 4)?),
        43 => (true, rd(8, 8)?),
        v => return Err(format!("TIFF version {v} (42 or 43 expected)")),
    };
    let (count, first, entry, inline) = if big { (rd(ifd, 8)?, ifd + 8, 20u64, 8u64) } else { (rd(ifd, 2)?, ifd + 2, 12, 4) };
    if count.saturating_mul(entry) > len.saturating_sub(first) {
        return Err(format!("the TIFF directory declares {count} entries, more than the {len}-byte file holds"));
    }
    let mut bytes = count * ENTRY_BYTES;
    for k in 0..count {
        let e = first + k * entry;
        let tag = rd(e, 2)? as u16;
        let ty = rd(e + 2, 2)? as u16;
        let n = if big { rd(e + 4, 8)? } else { rd(e + 4, 4)? };
        let size = n.checked_mul(type_size(ty)).filter(|&s| s <= len).ok_or_else(|| format!("TIFF tag {tag} declares {n} values, more than the {len}-byte file holds"))?;
        let at = if size <= inline {
            e + if big { 12 } else { 8 }
        } else {
            let off = if big { rd(e + 12, 8)? } else { rd(e + 8, 4)? };
            if off.checked_add(size).is_none_or(|end| end > len) {
                return Err(format!("TIFF tag {tag}: {n} values at offset {off} run past the end of the {len}-byte file"));
            }
            off
        };
        if READ_TAGS.contains(&tag) {
            bytes += n * VALUE_BYTES + size;
        }
        if STRIP_OR_TILE_BYTE_COUNTS.contains(&tag) && matches!(ty, 3 | 4 | 16) {
            let w = type_size(ty) as usize;
            for i in 0..n {
                let c = rd(at + i * w as u64, w)?;
                if c > len {
                    return Err(format!("TIFF strip or tile {i} claims {c} bytes in a {len}-byte file"));
                }
            }
        }
    }
    Ok(TiffHeader { directory_bytes: bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiff() -> Vec<u8> {
        let mut out = std::io::Cursor::new(vec![]);
        image::DynamicImage::new_rgb8(8, 6).write_to(&mut out, image::ImageFormat::Tiff).unwrap();
        out.into_inner()
    }

    /// Offset of the first entry with `tag` in a little-endian classic TIFF.
    fn entry(b: &[u8], tag: u16) -> usize {
        let ifd = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        let n = u16::from_le_bytes([b[ifd], b[ifd + 1]]) as usize;
        (0..n).map(|k| ifd + 2 + 12 * k).find(|&e| u16::from_le_bytes([b[e], b[e + 1]]) == tag).unwrap()
    }

    #[test]
    fn a_genuine_tiff_passes_with_a_small_directory() {
        let h = check(&tiff()).unwrap();
        assert!(h.directory_bytes > 0 && h.directory_bytes < 4096, "{}", h.directory_bytes);
        assert_eq!(check(b"\x89PNG").unwrap().directory_bytes, 0);
    }

    #[test]
    fn counts_and_offsets_past_the_file_are_refused() {
        let mut b = tiff();
        let e = entry(&b, 273);
        b[e + 4..e + 8].copy_from_slice(&10_000_000u32.to_le_bytes());
        assert!(check(&b).unwrap_err().contains("tag 273 declares 10000000 values"));
        let mut b = tiff();
        let e = entry(&b, 279);
        b[e + 8..e + 12].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(check(&b).unwrap_err().contains("claims 1000000 bytes"), "{:?}", check(&b).err());
        let mut b = tiff();
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check(&b).is_err());
    }
}
