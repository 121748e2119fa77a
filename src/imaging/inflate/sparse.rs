//! Inflating a label map without writing its zeros.
//!
//! A segmentation mask stored as a gzip NRRD is almost all background:
//! lung1's 25 MB of 16-bit samples compress to 25 KB, nearly all of it
//! copies of 258 zero bytes (RFC 1951 §3.2.5). Inflating it the usual way
//! writes those 25 MB, scans them for the label and runs the CRC-32 over
//! them (~2.3 ms with flate2, about a tenth of an end-to-end radiomics run).
//! Here a copy whose source is known to be zeros only moves the position
//! on, the CRC-32 of a run of zeros is computed in O(log n) steps (zlib's
//! `crc32_combine` method: multiplying by x^(8n) modulo the CRC
//! polynomial), and only the stretches that may hold a non-zero byte are
//! handed to the caller.

use super::{
    Bad, Bits, Decoder, Huffman, KIND, KIND_EOB, KIND_LEN, KIND_LIT, MAX_MATCH, SLOW, State,
    WINDOW, deflate_offset, dist_info, lit_info,
};

/// The ring of recent output: a power of two with room for the window.
const RING: usize = 2 * WINDOW;
const MASK: usize = RING - 1;
/// Zero runs up to this long go through crc32fast from a zeroed buffer;
/// longer ones through [`crc_of_zeros`].
const SHORT_ZEROS: usize = 4096;
static ZEROS: [u8; SHORT_ZEROS] = [0; SHORT_ZEROS];

/// The whole output of the gzip member `gz` as the stretches that may hold
/// a non-zero byte: `nonzero(offset, bytes)` is called in order of
/// increasing offset, and every output byte outside the stretches is 0.
/// Returns the output's length, after checking the member's CRC-32 and
/// ISIZE (RFC 1952 §2.3.1).
///
/// `None` when the data is not exactly one well-formed gzip member (a
/// decode error, a bad trailer, another member or bytes after it): the
/// caller then inflates with a general decoder, which reports what is
/// wrong. Stretches already handed over before that are to be discarded.
pub fn inflate_sparse(gz: &[u8], nonzero: impl FnMut(usize, &[u8])) -> Option<usize> {
    let start = deflate_offset(gz)?;
    let data = &gz[start..];
    let mut dec = Decoder::new();
    let mut bits = Bits::at(data, 0);
    let mut out = Out {
        ring: vec![0; RING],
        pos: 0,
        zeros: 0,
        crc: crc32fast::Hasher::new(),
        pending: 0,
        nonzero,
    };
    loop {
        let state = dec.header(&mut bits, false).ok()?;
        let last = match state {
            State::Stored { left, last } => {
                // `header` left the reader byte aligned at the data.
                let at = bits.bit() / 8;
                for &b in data.get(at..at + left)? {
                    out.literal(b);
                }
                bits = Bits::at(data, (at + left) * 8);
                last
            }
            State::Huffman { fixed, last } => {
                let (lit, dist) = if fixed {
                    (&dec.fixed_lit, &dec.fixed_dist)
                } else {
                    (&dec.lit, &dec.dist)
                };
                huffman_block(lit, dist, &mut bits, &mut out).ok()?;
                last
            }
            State::Header | State::Done => return None,
        };
        if bits.overrun() {
            return None;
        }
        if last {
            break;
        }
    }
    // The trailer follows the final block at the next byte boundary, and
    // ends the data: anything after it (another member) is left to the
    // general decoder.
    let at = bits.bit().div_ceil(8);
    let trailer = data.get(at..)?;
    if trailer.len() != 8 {
        return None;
    }
    let crc = u32::from_le_bytes(trailer[..4].try_into().ok()?);
    let isize = u32::from_le_bytes(trailer[4..].try_into().ok()?);
    (out.finish_crc() == crc && isize == out.pos as u32).then_some(out.pos)
}

/// The decoder's output side.
struct Out<F> {
    /// Output byte `i` at `ring[i & MASK]` for the last `RING` bytes,
    /// except that zeros are not written while the whole ring is zero.
    ring: Vec<u8>,
    /// Bytes of output so far.
    pos: usize,
    /// How many bytes at the end of the output are 0.
    zeros: usize,
    /// CRC-32 of the output up to the last `pending` bytes, all zero.
    crc: crc32fast::Hasher,
    pending: usize,
    nonzero: F,
}

impl<F: FnMut(usize, &[u8])> Out<F> {
    #[inline(always)]
    fn literal(&mut self, b: u8) {
        if b == 0 {
            // Once `zeros` reaches the ring's size every byte in it is 0
            // (each was written while it was smaller), so a zero changes
            // nothing there.
            if self.zeros < RING {
                self.ring[self.pos & MASK] = 0;
            }
            self.zeros += 1;
            self.pending += 1;
        } else {
            self.ring[self.pos & MASK] = b;
            self.zeros = 0;
            self.emit(self.pos, &[b]);
        }
        self.pos += 1;
    }

    /// A copy of `len` bytes from `distance` back (§3.2.3: overlapping
    /// copies repeat).
    #[inline(always)]
    fn copy(&mut self, len: usize, distance: usize) -> Result<(), Bad> {
        if distance > self.pos {
            return Err(Bad::Distance);
        }
        if distance <= self.zeros {
            // The source is zeros, so is every byte copied.
            if self.zeros < RING {
                let at = self.pos & MASK;
                let first = len.min(RING - at);
                self.ring[at..at + first].fill(0);
                self.ring[..len - first].fill(0);
            }
            self.zeros += len;
            self.pending += len;
            self.pos += len;
            return Ok(());
        }
        let mut copied = [0u8; MAX_MATCH];
        for (k, c) in copied[..len].iter_mut().enumerate() {
            let b = self.ring[(self.pos + k - distance) & MASK];
            self.ring[(self.pos + k) & MASK] = b;
            *c = b;
        }
        let copied = &copied[..len];
        match (
            copied.iter().position(|&b| b != 0),
            copied.iter().rposition(|&b| b != 0),
        ) {
            (Some(first), Some(last)) => {
                self.pending += first;
                self.emit(self.pos + first, &copied[first..=last]);
                self.zeros = len - 1 - last;
                self.pending += self.zeros;
            }
            _ => {
                self.zeros += len;
                self.pending += len;
            }
        }
        self.pos += len;
        Ok(())
    }

    /// Hands over a stretch of output and adds it to the CRC.
    fn emit(&mut self, at: usize, bytes: &[u8]) {
        self.flush_zeros();
        self.crc.update(bytes);
        (self.nonzero)(at, bytes);
    }

    fn flush_zeros(&mut self) {
        if self.pending <= SHORT_ZEROS {
            self.crc.update(&ZEROS[..self.pending]);
        } else {
            let crc = std::mem::take(&mut self.crc).finalize();
            self.crc = crc32fast::Hasher::new_with_initial(crc_of_zeros(crc, self.pending));
        }
        self.pending = 0;
    }

    fn finish_crc(&mut self) -> u32 {
        self.flush_zeros();
        self.crc.clone().finalize()
    }
}

/// The symbols of one Huffman block (§3.2.5) up to its end-of-block code.
fn huffman_block<F: FnMut(usize, &[u8])>(
    lit: &Huffman,
    dist: &Huffman,
    bits: &mut Bits,
    out: &mut Out<F>,
) -> Result<(), Bad> {
    let lit_mask = (lit.table.len() - 1) as u64;
    let dist_mask = (dist.table.len() - 1) as u64;
    loop {
        // 56 bits: a length code with its extra bits and a distance code
        // with its extra bits take at most 15 + 5 + 15 + 13.
        bits.refill();
        let mut e = lit.table[(bits.buf & lit_mask) as usize];
        if e == SLOW {
            let (sym, len) = lit.slow(bits.buf).ok_or(Bad::Code)?;
            e = lit_info(sym) | len;
        }
        bits.consume(e & 15);
        match e >> 4 & 3 {
            KIND_LIT => out.literal((e >> 16) as u8),
            KIND_LEN => {
                let len = (e >> 16) as usize + bits.take(e >> 8 & 15) as usize;
                let mut d = dist.table[(bits.buf & dist_mask) as usize];
                if d == SLOW {
                    let (sym, l) = dist.slow(bits.buf).ok_or(Bad::Code)?;
                    d = dist_info(sym) | l;
                }
                if d & KIND != 0 {
                    return Err(Bad::Code);
                }
                bits.consume(d & 15);
                let distance = (d >> 16) as usize + bits.take(d >> 8 & 15) as usize;
                out.copy(len, distance)?;
            }
            KIND_EOB => return Ok(()),
            _ => return Err(Bad::Code),
        }
        if bits.overrun() {
            return Err(Bad::Input);
        }
    }
}

/// The CRC-32 polynomial, bit-reversed (as the byte-wise algorithm uses it).
const POLY: u32 = 0xedb8_8320;

/// a·b modulo the CRC polynomial, both in the reflected representation
/// (bit 31 holds x⁰).
const fn mult_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(2^k) modulo the polynomial, k = 0..64.
const X2N: [u32; 64] = {
    let mut t = [0u32; 64];
    t[0] = 1 << 30; // x¹
    let mut k = 1;
    while k < 64 {
        t[k] = mult_mod_p(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// The CRC-32 of a message with `n` zero bytes appended, from the CRC-32
/// `crc` of the message. Appending a zero byte multiplies the register
/// (the CRC without its final inversion) by x⁸ modulo the polynomial, so
/// `n` of them multiply it by x^(8n), built from the powers x^(2^k).
fn crc_of_zeros(crc: u32, n: usize) -> u32 {
    let (mut n, mut k, mut xn) = (n as u64, 3usize, 1u32 << 31);
    while n != 0 {
        if n & 1 != 0 {
            xn = mult_mod_p(X2N[k], xn);
        }
        n >>= 1;
        k += 1;
    }
    !mult_mod_p(xn, !crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The output rebuilt from the stretches (zeros elsewhere).
    fn rebuilt(gz: &[u8]) -> Option<Vec<u8>> {
        let mut parts: Vec<(usize, Vec<u8>)> = Vec::new();
        let n = inflate_sparse(gz, |at, b| parts.push((at, b.to_vec())))?;
        let mut out = vec![0u8; n];
        let mut end = 0;
        for (at, b) in parts {
            assert!(at >= end, "stretches out of order");
            assert!(!b.is_empty());
            out[at..at + b.len()].copy_from_slice(&b);
            end = at + b.len();
        }
        Some(out)
    }

    /// A sparse label map: long zero runs, a few labelled rows, some noise.
    fn label_map(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as usize
        };
        for _ in 0..40 {
            let at = next() % len;
            let run = 1 + next() % 600;
            for (k, b) in v[at..(at + run).min(len)].iter_mut().enumerate() {
                *b = if k % 2 == 0 {
                    1 + (next() % 3) as u8
                } else {
                    0
                };
            }
        }
        v
    }

    #[test]
    fn crc_of_zeros_equals_crc32_over_zeros() {
        for n in [0usize, 1, 7, 8, 4095, 4096, 4097, 65_537, (1 << 20) + 3] {
            let mut h = crc32fast::Hasher::new();
            h.update(b"a prefix");
            let before = h.clone().finalize();
            h.update(&vec![0u8; n]);
            assert_eq!(crc_of_zeros(before, n), h.finalize(), "n = {n}");
        }
    }

    #[test]
    fn sparse_output_equals_the_data() {
        for (len, seed) in [(1usize << 20, 1u64), (3 << 20, 2), (100_000, 3), (5, 4)] {
            let data = label_map(len, seed);
            for level in [0, 1, 6, 9] {
                let gz = gzip(&data, level);
                assert_eq!(
                    rebuilt(&gz).as_deref(),
                    Some(&data[..]),
                    "len {len} level {level}"
                );
            }
        }
        // All zeros, and no bytes at all.
        for data in [vec![0u8; 5 << 20], Vec::new()] {
            assert_eq!(rebuilt(&gzip(&data, 6)), Some(data));
        }
    }

    #[test]
    fn dense_data_comes_through_too() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(rebuilt(&gzip(&data, 6)), Some(data));
    }

    #[test]
    fn a_damaged_member_is_refused_not_misread() {
        let data = label_map(1 << 20, 5);
        let gz = gzip(&data, 6);
        let n = gz.len();
        // A changed CRC or length, a truncated member, a second member.
        let mut bad_crc = gz.clone();
        bad_crc[n - 8] ^= 1;
        let mut bad_len = gz.clone();
        bad_len[n - 1] ^= 1;
        let mut two = gz.clone();
        two.extend_from_slice(&gzip(b"x", 6));
        for (what, bytes) in [
            ("crc", bad_crc),
            ("length", bad_len),
            ("truncated", gz[..n - 100].to_vec()),
            ("two members", two),
        ] {
            assert!(rebuilt(&bytes).is_none(), "{what}");
        }
        // Flipped bits anywhere in the data: refused or exact, never a panic.
        for k in (20..n - 8).step_by(97) {
            let mut d = gz.clone();
            d[k] ^= 0x10;
            if let Some(out) = rebuilt(&d) {
                assert_eq!(out, data, "a flip at {k} decoded to other data");
            }
        }
    }
}
