//! Where a raw deflate stream really ends, to the bit, and whether its filler bits are zero.
//!
//! A deflate stream ends inside its last byte; the bits after the final end-of-block code, and
//! the bits that align a stored block to a byte, are ignored by every inflater. Left unchecked
//! they are up to 7 free bits per entry (and per stored block) that change the archive without
//! changing a signed byte — the mutation fuzzer found them. This walks the block structure and
//! Huffman codes without producing output (no window, no copies) and reports the first
//! non-zero filler bit. It runs only on streams the real inflater has already accepted.

/// LSB-first bit reader (deflate's bit order).
struct Bits<'a> {
    data: &'a [u8],
    /// Next bit to read, counted from the start of `data`.
    pos: u64,
}

impl Bits<'_> {
    fn total(&self) -> u64 {
        self.data.len() as u64 * 8
    }

    /// `n` ≤ 25 bits without consuming them; zeros past the end.
    fn peek(&self, n: u32) -> u32 {
        let byte = (self.pos / 8) as usize;
        let mut v: u32 = 0;
        for i in 0..4 {
            if let Some(b) = self.data.get(byte + i) {
                v |= (*b as u32) << (8 * i);
            }
        }
        (v >> (self.pos % 8)) & ((1u32 << n) - 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, String> {
        if self.pos + n as u64 > self.total() {
            return Err("deflate stream ends early".into());
        }
        let v = self.peek(n);
        self.pos += n as u64;
        Ok(v)
    }
}

/// A canonical Huffman code as counts per length and symbols in code order (zlib's `puff`):
/// building costs O(symbols) and decoding O(code length), so the walk stays linear in the
/// input whatever a hostile stream does (thousands of tiny blocks cannot make it slow).
struct Table {
    count: [u16; 16],
    symbol: Vec<u16>,
}

const MAX: u32 = 15;

impl Table {
    fn new(lengths: &[u8]) -> Result<Self, String> {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut left: i64 = 1;
        for &c in &count[1..] {
            left = left * 2 - c as i64;
            if left < 0 {
                return Err("over-subscribed Huffman code".into());
            }
        }
        let mut offs = [0u16; 16];
        for len in 1..15 {
            offs[len + 1] = offs[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[offs[l as usize] as usize] = sym as u16;
                offs[l as usize] += 1;
            }
        }
        Ok(Table { count, symbol })
    }

    fn decode(&self, b: &mut Bits<'_>) -> Result<u32, String> {
        let v = b.peek(MAX);
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..=MAX {
            code |= ((v >> (len - 1)) & 1) as i32;
            let count = self.count[len as usize] as i32;
            if code - first < count {
                b.bits(len)?;
                return Ok(self.symbol[(index + code - first) as usize] as u32);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("invalid Huffman code".into())
    }
}

const LEN_EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_EXTRA: [u32; 30] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// Checks that every bit of `comp` not read by an inflater is zero and that the stream ends
/// in its last byte. `Err` names the problem.
pub(crate) fn check_filler_bits(comp: &[u8]) -> Result<(), String> {
    let mut b = Bits { data: comp, pos: 0 };
    let zero = |b: &mut Bits<'_>, n: u32, what: &str| -> Result<(), String> {
        if b.bits(n)? != 0 {
            return Err(format!("non-zero {what} bits in the deflate stream"));
        }
        Ok(())
    };
    loop {
        let last = b.bits(1)? == 1;
        match b.bits(2)? {
            0 => {
                let pad = ((8 - b.pos % 8) % 8) as u32;
                zero(&mut b, pad, "stored-block alignment")?;
                let len = b.bits(16)?;
                let nlen = b.bits(16)?;
                if len != !nlen & 0xFFFF {
                    return Err("stored block length check fails".into());
                }
                if b.pos + len as u64 * 8 > b.total() {
                    return Err("deflate stream ends early".into());
                }
                b.pos += len as u64 * 8;
            }
            kind @ (1 | 2) => {
                let (lit, dist) = if kind == 1 {
                    let mut l = [0u8; 288];
                    l[..144].fill(8);
                    l[144..256].fill(9);
                    l[256..280].fill(7);
                    l[280..].fill(8);
                    (Table::new(&l)?, Table::new(&[5u8; 30])?)
                } else {
                    let hlit = b.bits(5)? as usize + 257;
                    let hdist = b.bits(5)? as usize + 1;
                    let hclen = b.bits(4)? as usize + 4;
                    let mut cl = [0u8; 19];
                    for &i in &CL_ORDER[..hclen] {
                        cl[i] = b.bits(3)? as u8;
                    }
                    let clt = Table::new(&cl)?;
                    let mut lengths = vec![0u8; hlit + hdist];
                    let mut i = 0;
                    while i < hlit + hdist {
                        let sym = clt.decode(&mut b)?;
                        let (val, rep) = match sym {
                            0..=15 => (sym as u8, 1),
                            16 => {
                                let prev = *lengths.get(i.wrapping_sub(1)).ok_or("repeat with no previous length")?;
                                (prev, 3 + b.bits(2)? as usize)
                            }
                            17 => (0, 3 + b.bits(3)? as usize),
                            _ => (0, 11 + b.bits(7)? as usize),
                        };
                        if i + rep > hlit + hdist {
                            return Err("code lengths overrun".into());
                        }
                        lengths[i..i + rep].fill(val);
                        i += rep;
                    }
                    (Table::new(&lengths[..hlit])?, Table::new(&lengths[hlit..])?)
                };
                loop {
                    let sym = lit.decode(&mut b)?;
                    match sym {
                        0..=255 => {}
                        256 => break,
                        257..=285 => {
                            b.bits(LEN_EXTRA[(sym - 257) as usize])?;
                            let d = dist.decode(&mut b)?;
                            let extra = *DIST_EXTRA.get(d as usize).ok_or("invalid distance code")?;
                            b.bits(extra)?;
                        }
                        _ => return Err("invalid literal/length code".into()),
                    }
                }
            }
            _ => return Err("invalid block type 3".into()),
        }
        if last {
            break;
        }
    }
    let rest = b.total() - b.pos;
    if rest >= 8 {
        return Err(format!("{} bytes follow the end of the deflate stream", rest / 8));
    }
    zero(&mut b, rest as u32, "end-of-stream padding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn real_streams_pass_and_set_filler_bits_fail() {
        let mut data: Vec<u8> = (0..200_000u32).map(|i| ((i * 2_654_435_761u32) >> 13) as u8 & if i % 7 == 0 { 0xff } else { 0x0f }).collect();
        data.extend(std::iter::repeat_n(0u8, 50_000));
        for level in [0, 1, 6, 9] {
            for d in [&data[..], &data[..1], &[][..], b"hello hello hello hello"] {
                let c = deflate(d, level);
                check_filler_bits(&c).unwrap_or_else(|e| panic!("level {level}, {} bytes: {e}", d.len()));
                // Setting the last byte's top bit is either a padding change (refused here) or
                // a change of a used bit (the inflater refuses or inflates something else).
                let mut m = c.clone();
                *m.last_mut().unwrap() |= 0x80;
                if m != c {
                    let same = {
                        let mut out = Vec::new();
                        let mut dec = flate2::read::DeflateDecoder::new(&m[..]);
                        std::io::Read::read_to_end(&mut dec, &mut out).is_ok() && out == d && dec.total_in() == m.len() as u64
                    };
                    assert!(!same || check_filler_bits(&m).is_err(), "level {level}: padding bit not caught");
                }
            }
        }
    }
}
