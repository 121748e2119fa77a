//! Inflating a prefix or a range of one gzip member on two cores (NRRD `encoding: gzip`).
//!
//! A gzip member is a single DEFLATE stream (RFC 1952 §2.2, RFC 1951), and
//! every block may copy from the 32 KiB of output before it (§3.2.5), so a
//! decoder normally has to start at the beginning: one core, however large
//! the volume. Research CTs come as one-member gzip NRRD files of 12–18 MB,
//! and inflating them was most of an end-to-end radiomics run
//! (docs/benchmarks.md, "Radiomics").
//!
//! The stream is split in two, in the way pugz and rapidgzip describe:
//! - this thread searches, from a bit offset part-way into the compressed
//!   data, for the start of a dynamic-Huffman block: a header that parses
//!   under the rules zlib's inflate enforces and a block that then decodes to
//!   its end-of-block code, followed by another valid block header;
//! - a second thread decodes from that block on with our own decoder, into
//!   16-bit cells: a literal is its byte value, and a copy that reaches into
//!   the unknown 32 KiB before the split yields *markers* (256 + position in
//!   that window), which later copies propagate like any other value;
//! - meanwhile libdeflate decodes the first part: the three bytes at the split
//!   are overwritten with an empty final fixed-Huffman block (BFINAL = 1,
//!   BTYPE = 01, code 256 = seven 0 bits, §3.2.6), so libdeflate stops exactly
//!   at the split and reports how much it read, which confirms the split is a
//!   real block boundary;
//! - the markers are then replaced with the first part's last 32 KiB.
//!
//! Anything unexpected — no block start found, a decode error in either
//! part, a split libdeflate does not end on — returns `None`, and the caller
//! inflates serially (which also reports corrupt data properly).
//!
//! When the bytes wanted are a small range late in the stream (a nodule's
//! few slices), [`inflate_range`] can skip the prefix altogether: a range
//! decoded from a block start with no marker left in it is exact whatever
//! came before, and the length of the rest of the stream (the gzip
//! trailer's ISIZE minus it) says where the range lies.
//!
//! [`inflate_sparse`] (`sparse.rs`) inflates a label map without writing its
//! zeros.

use super::pages;
use std::sync::atomic::{AtomicUsize, Ordering};

mod sparse;
pub use sparse::inflate_sparse;

/// DEFLATE's window: the farthest a copy reaches back (RFC 1951 §3.2.5).
const WINDOW: usize = 1 << 15;
/// Longest match (§3.2.5).
const MAX_MATCH: usize = 258;
/// Room a decode buffer keeps past its limit (a match and its overshoot).
const ROOM: usize = MAX_MATCH + OVERSHOOT;

/// Bits of the first-level lookup tables (longer codes take the slow path).
const LIT_BITS: u32 = 11;
const DIST_BITS: u32 = 10;

// Table entry layout: value << 16 | extra << 8 | kind << 4 | code length.
// A code length of 0 means "longer than the table: decode canonically".
const KIND_LIT: u32 = 0;
const KIND_LEN: u32 = 1;
const KIND_EOB: u32 = 2;
const KIND_BAD: u32 = 3;
const KIND: u32 = 0x30;
/// Entry for a code longer than the table (kind BAD, code length 0).
const SLOW: u32 = KIND_BAD << 4;

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Order of the code-length code lengths in a dynamic header (§3.2.7).
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

fn lit_info(sym: usize) -> u32 {
    match sym {
        0..=255 => (sym as u32) << 16 | KIND_LIT << 4,
        256 => KIND_EOB << 4,
        257..=285 => {
            let i = sym - 257;
            (LEN_BASE[i] as u32) << 16 | (LEN_EXTRA[i] as u32) << 8 | KIND_LEN << 4
        }
        _ => KIND_BAD << 4,
    }
}

fn dist_info(sym: usize) -> u32 {
    match sym {
        0..=29 => (DIST_BASE[sym] as u32) << 16 | (DIST_EXTRA[sym] as u32) << 8,
        _ => KIND_BAD << 4,
    }
}

/// Why a decode stopped early; only used to choose the serial fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    Header,
    Code,
    Distance,
    Stored,
    Input,
}

/// A canonical Huffman code (§3.2.2) with a first-level table.
struct Huffman {
    table: Vec<u32>,
    bits: u32,
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(bits: u32) -> Self {
        Self {
            table: vec![0; 1 << bits],
            bits,
            counts: [0; 16],
            symbols: Vec::with_capacity(288),
        }
    }

    /// Builds the code from code lengths. Over-subscribed codes are errors;
    /// incomplete ones too unless the longest code has length 1, which is
    /// what zlib's `inflate_table` accepts (and a code with no symbols, which
    /// only matters if it is used). Returns whether the code is complete.
    fn build(&mut self, lengths: &[u8], info: fn(usize) -> u32) -> Result<bool, Bad> {
        self.counts = [0; 16];
        for &l in lengths {
            self.counts[l as usize] += 1;
        }
        self.counts[0] = 0;
        let max = (1..16).rev().find(|&l| self.counts[l] != 0).unwrap_or(0);
        let mut left: i32 = 1;
        for l in 1..16 {
            left <<= 1;
            left -= self.counts[l] as i32;
            if left < 0 {
                return Err(Bad::Code);
            }
        }
        if left > 0 && max > 1 {
            return Err(Bad::Code);
        }
        let mut offs = [0u16; 16];
        for l in 1..15 {
            offs[l + 1] = offs[l] + self.counts[l];
        }
        self.symbols.clear();
        self.symbols.resize(lengths.len(), 0);
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                self.symbols[offs[l as usize] as usize] = sym as u16;
                offs[l as usize] += 1;
            }
        }
        // Unused patterns (incomplete codes) decode as errors.
        self.table.fill(KIND_BAD << 4 | 1);
        let size = 1usize << self.bits;
        let mut code: u32 = 0;
        let mut index = 0usize;
        for l in 1..16u32 {
            for _ in 0..self.counts[l as usize] {
                let sym = self.symbols[index] as usize;
                index += 1;
                // Huffman codes are packed most significant bit first
                // (§3.1.1), the bit reader serves the least significant first.
                let rev = code.reverse_bits() >> (32 - l);
                if l <= self.bits {
                    let entry = info(sym) | l;
                    let mut i = rev as usize;
                    while i < size {
                        self.table[i] = entry;
                        i += 1 << l;
                    }
                } else {
                    self.table[(rev & ((1 << self.bits) - 1)) as usize] = SLOW;
                }
                code += 1;
            }
            code <<= 1;
        }
        Ok(left == 0)
    }

    /// Canonical decode one bit at a time (puff's method), for codes longer
    /// than the table. Returns (symbol, code length).
    #[cold]
    fn slow(&self, buf: u64) -> Option<(usize, u32)> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16u32 {
            code |= ((buf >> (len - 1)) & 1) as i32;
            let count = self.counts[len as usize] as i32;
            if code - first < count {
                return Some((self.symbols[(index + code - first) as usize] as usize, len));
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        None
    }
}

/// LSB-first bit reader (§3.1.1) over a byte slice. Bits past the end read as
/// zero; `overrun` says whether any were made up that way.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    cnt: u32,
}

impl<'a> Bits<'a> {
    fn at(data: &'a [u8], bit: usize) -> Self {
        let mut b = Self {
            data,
            pos: bit / 8,
            buf: 0,
            cnt: 0,
        };
        b.refill();
        b.consume((bit % 8) as u32);
        b
    }

    /// Tops the buffer up to at least 56 bits.
    #[inline(always)]
    fn refill(&mut self) {
        let k = ((63 - self.cnt) >> 3) as usize;
        let w = if self.pos + 8 <= self.data.len() {
            // SAFETY: 8 bytes from pos are in the slice (checked above).
            u64::from_le(unsafe {
                std::ptr::read_unaligned(self.data.as_ptr().add(self.pos) as *const u64)
            })
        } else {
            self.tail_word()
        };
        // k ≤ 7 bytes fit; keep only those so bits above `cnt` stay zero.
        let w = w & ((1u64 << (8 * k)) - 1);
        self.buf |= w << self.cnt;
        self.pos += k;
        self.cnt += 8 * k as u32;
    }

    /// The last bytes of the input, zero-padded.
    #[cold]
    fn tail_word(&self) -> u64 {
        let mut a = [0u8; 8];
        if self.pos < self.data.len() {
            let n = self.data.len() - self.pos;
            a[..n].copy_from_slice(&self.data[self.pos..]);
        }
        u64::from_le_bytes(a)
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) {
        self.buf >>= n;
        self.cnt -= n;
    }

    #[inline(always)]
    fn take(&mut self, n: u32) -> u32 {
        let v = (self.buf & ((1u64 << n) - 1)) as u32;
        self.consume(n);
        v
    }

    /// Bit offset of the next unread bit.
    fn bit(&self) -> usize {
        self.pos * 8 - self.cnt as usize
    }

    fn overrun(&self) -> bool {
        self.bit() > self.data.len() * 8
    }
}

/// DEFLATE decoder into 16-bit cells (values ≥ 256 are window markers).
struct Decoder {
    lit: Huffman,
    dist: Huffman,
    fixed_lit: Huffman,
    fixed_dist: Huffman,
    /// The code-length code of a dynamic header (§3.2.7), kept to reuse
    /// its tables: a block search reads thousands of candidate headers.
    cl: Huffman,
    lengths: [u8; 320],
}

/// Where the decoder is between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a block header.
    Header,
    /// Inside a Huffman block (fixed or dynamic code), `last` = BFINAL.
    Huffman { fixed: bool, last: bool },
    /// Inside a stored block with `left` bytes to go.
    Stored { left: usize, last: bool },
    /// After the final block.
    Done,
}

impl Decoder {
    fn new() -> Self {
        let mut fixed_lit = Huffman::new(LIT_BITS);
        let mut l = [0u8; 288];
        l[..144].fill(8);
        l[144..256].fill(9);
        l[256..280].fill(7);
        l[280..].fill(8);
        fixed_lit.build(&l, lit_info).expect("fixed code");
        let mut fixed_dist = Huffman::new(DIST_BITS);
        fixed_dist.build(&[5u8; 32], dist_info).expect("fixed code");
        Self {
            lit: Huffman::new(LIT_BITS),
            dist: Huffman::new(DIST_BITS),
            fixed_lit,
            fixed_dist,
            cl: Huffman::new(7),
            lengths: [0; 320],
        }
    }

    /// Reads a dynamic block header (§3.2.7) into `self.lit` / `self.dist`.
    /// With `strict`, both codes must also be complete (zlib always writes
    /// complete codes), which makes a random bit position very unlikely to
    /// pass as a block start.
    fn dynamic_header(&mut self, bits: &mut Bits, strict: bool) -> Result<(), Bad> {
        bits.refill();
        let hlit = bits.take(5) as usize + 257;
        let hdist = bits.take(5) as usize + 1;
        let hclen = bits.take(4) as usize + 4;
        if hlit > 286 || hdist > 30 {
            return Err(Bad::Header);
        }
        let mut cl = [0u8; 19];
        for &i in &CL_ORDER[..hclen] {
            // 19 · 3 bits would be more than one refill guarantees.
            bits.refill();
            cl[i] = bits.take(3) as u8;
        }
        let clh = &mut self.cl;
        // zlib rejects an incomplete code-length code outright.
        if !clh.build(&cl, |s| (s as u32) << 16)? {
            return Err(Bad::Header);
        }
        let n = hlit + hdist;
        // Kraft sums (in units of 2^-15) of the two codes so far: an
        // over-subscribed code is an error however the header goes on, and
        // stopping at once is what keeps a block search fast, where most
        // candidate headers are random bits.
        let mut kraft = [0u32; 2];
        let mut i = 0;
        while i < n {
            bits.refill();
            let e = clh.table[(bits.buf & 0x7f) as usize];
            let len = e & 15;
            if e >> 4 & 3 == KIND_BAD {
                return Err(Bad::Header);
            }
            bits.consume(len);
            let sym = (e >> 16) as u8;
            let (value, repeat) = match sym {
                0..=15 => (sym, 1),
                16 => {
                    if i == 0 {
                        return Err(Bad::Header);
                    }
                    (self.lengths[i - 1], 3 + bits.take(2) as usize)
                }
                17 => (0, 3 + bits.take(3) as usize),
                _ => (0, 11 + bits.take(7) as usize),
            };
            if i + repeat > n {
                return Err(Bad::Header);
            }
            self.lengths[i..i + repeat].fill(value);
            if value != 0 {
                // A repeat may run on from one code into the next (§3.2.7).
                for k in i..i + repeat {
                    let c = &mut kraft[usize::from(k >= hlit)];
                    *c += 1 << (15 - value);
                }
                if kraft[0] > 1 << 15 || kraft[1] > 1 << 15 {
                    return Err(Bad::Code);
                }
            }
            i += repeat;
        }
        if self.lengths[256] == 0 {
            return Err(Bad::Header);
        }
        let lit_complete = self.lit.build(&self.lengths[..hlit], lit_info)?;
        let dist_complete = self.dist.build(&self.lengths[hlit..n], dist_info)?;
        if strict && !(lit_complete && dist_complete) {
            return Err(Bad::Header);
        }
        if bits.overrun() {
            return Err(Bad::Input);
        }
        Ok(())
    }

    /// Reads a block header (§3.2.3).
    fn header(&mut self, bits: &mut Bits, strict: bool) -> Result<State, Bad> {
        bits.refill();
        let last = bits.take(1) == 1;
        match bits.take(2) {
            0 => {
                // Back to the byte boundary, LEN and NLEN from the bytes.
                let at = bits.bit().div_ceil(8);
                let d = bits.data;
                if at + 4 > d.len() {
                    return Err(Bad::Input);
                }
                let len = u16::from_le_bytes([d[at], d[at + 1]]);
                let nlen = u16::from_le_bytes([d[at + 2], d[at + 3]]);
                if len != !nlen {
                    return Err(Bad::Stored);
                }
                *bits = Bits::at(d, (at + 4) * 8);
                Ok(State::Stored {
                    left: len as usize,
                    last,
                })
            }
            1 => Ok(State::Huffman { fixed: true, last }),
            2 => {
                self.dynamic_header(bits, strict)?;
                Ok(State::Huffman { fixed: false, last })
            }
            _ => Err(Bad::Header),
        }
    }

    /// Decodes from `state` into `out[*pos..]` until the end of the current
    /// block or until `*pos >= limit` (`out` must have `MAX_MATCH` cells of
    /// room past `limit`). Returns the state to resume from.
    fn run<T: Cell>(
        &mut self,
        state: State,
        bits: &mut Bits,
        out: &mut [T],
        pos: &mut usize,
        limit: usize,
    ) -> Result<State, Bad> {
        match state {
            State::Header | State::Done => Ok(state),
            State::Stored { left, last } => {
                // The reader is byte aligned with nothing buffered past
                // whole bytes (`Bits::at` on a byte boundary).
                let at = bits.bit() / 8;
                let d = bits.data;
                if at + left > d.len() {
                    return Err(Bad::Input);
                }
                let n = left.min(limit.saturating_sub(*pos));
                for (o, &b) in out[*pos..*pos + n].iter_mut().zip(&d[at..at + n]) {
                    *o = T::byte(b);
                }
                *pos += n;
                *bits = Bits::at(d, (at + n) * 8);
                Ok(if n == left {
                    if last { State::Done } else { State::Header }
                } else {
                    State::Stored {
                        left: left - n,
                        last,
                    }
                })
            }
            State::Huffman { fixed, last } => {
                let (lit, dist) = if fixed {
                    (&self.fixed_lit, &self.fixed_dist)
                } else {
                    (&self.lit, &self.dist)
                };
                let eob = symbols(lit, dist, bits, out, pos, limit)?;
                if bits.overrun() {
                    return Err(Bad::Input);
                }
                Ok(match (eob, last) {
                    (false, _) => state,
                    (true, true) => State::Done,
                    (true, false) => State::Header,
                })
            }
        }
    }
}

/// An output cell: a byte, or a 16-bit cell that can also hold a marker.
trait Cell: Copy + Send + Sync + 'static {
    fn byte(b: u8) -> Self;
}
impl Cell for u8 {
    #[inline(always)]
    fn byte(b: u8) -> Self {
        b
    }
}
impl Cell for u16 {
    #[inline(always)]
    fn byte(b: u8) -> Self {
        b as u16
    }
}

/// Cells written past a copy's end by the chunked copy below; buffers keep
/// this much room after `limit + MAX_MATCH`.
const OVERSHOOT: usize = 32;

/// The symbol loop of a Huffman block (§3.2.5). Returns true at the
/// end-of-block code, false when `limit` was reached first.
///
/// Shaped for speed the way libdeflate's decoder is: the bit buffer lives in
/// registers; while 8 input bytes remain the refill is one unaligned load
/// (the bits above `cnt` are then the stream's next bits, so loading them
/// again is harmless); literals are tested first and two decode per refill;
/// a length or distance code leaves with its extra bits in one shift; the
/// next table entry is loaded before a match is copied; kinds are plain
/// branches rather than a `match` that compiled to an indirect jump. On the
/// radiomics CTs this took our decoder from 1.9× to 1.35× libdeflate's time
/// for a whole stream.
fn symbols<T: Cell>(
    lit: &Huffman,
    dist: &Huffman,
    outer: &mut Bits,
    out: &mut [T],
    pos: &mut usize,
    limit: usize,
) -> Result<bool, Bad> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("bmi2") {
        // SAFETY: the CPU has BMI2 (checked just above).
        return unsafe { symbols_bmi2(lit, dist, outer, out, pos, limit) };
    }
    symbols_body(lit, dist, outer, out, pos, limit)
}

/// [`symbols_body`] compiled with BMI2 (`shrx`, `bzhi`: variable shifts and
/// masks without the `cl` register), as libdeflate selects at run time:
/// about 7 % faster on the radiomics CTs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "bmi2")]
fn symbols_bmi2<T: Cell>(
    lit: &Huffman,
    dist: &Huffman,
    outer: &mut Bits,
    out: &mut [T],
    pos: &mut usize,
    limit: usize,
) -> Result<bool, Bad> {
    symbols_body(lit, dist, outer, out, pos, limit)
}

/// The loop itself, inlined into both entry points.
#[inline(always)]
fn symbols_body<T: Cell>(
    lit: &Huffman,
    dist: &Huffman,
    outer: &mut Bits,
    out: &mut [T],
    pos: &mut usize,
    limit: usize,
) -> Result<bool, Bad> {
    assert!(limit + MAX_MATCH + OVERSHOOT <= out.len());
    let lit_mask = (lit.table.len() - 1) as u64;
    let dist_mask = (dist.table.len() - 1) as u64;
    let lt = &lit.table[..];
    let dt = &dist.table[..];
    let base = out.as_mut_ptr();
    let data = outer.data;
    let fast_end = data.len().saturating_sub(8);
    let (mut buf, mut cnt, mut ip) = (outer.buf, outer.cnt, outer.pos);
    let mut p = *pos;
    macro_rules! refill {
        () => {
            if ip <= fast_end {
                // SAFETY: ip + 8 ≤ data.len().
                let w = u64::from_le(unsafe {
                    std::ptr::read_unaligned(data.as_ptr().add(ip) as *const u64)
                });
                buf |= w << cnt;
                ip += ((63 - cnt) >> 3) as usize;
                cnt |= 56;
            } else {
                let mut b = Bits {
                    data,
                    pos: ip,
                    buf,
                    cnt,
                };
                b.refill();
                (buf, cnt, ip) = (b.buf, b.cnt, b.pos);
            }
        };
    }
    // Writes the literal of entry `$e` and consumes its code.
    macro_rules! literal {
        ($e:expr) => {
            // SAFETY: p ≤ limit + 1 at every use (checked against `limit`
            // before each group of at most two), and out has MAX_MATCH cells
            // past limit.
            unsafe { *base.add(p) = T::byte(($e >> 16) as u8) };
            p += 1;
            buf >>= $e & 15;
            cnt -= $e & 15;
        };
    }
    // Invariant at the top of the loop: at least 56 bits are buffered and
    // `e` is the table entry for the next code (looked up with at least
    // LIT_BITS real bits, so a refill does not change it).
    refill!();
    let mut e = lt[(buf & lit_mask) as usize];
    let result = loop {
        if p >= limit {
            break Ok(false);
        }
        if e & KIND == 0 {
            // Up to two literals, then a refill (≥ 56 − 2·11 bits left).
            literal!(e);
            e = lt[(buf & lit_mask) as usize];
            if e & KIND == 0 {
                literal!(e);
                e = lt[(buf & lit_mask) as usize];
            }
            refill!();
            continue;
        }
        if e >> 4 & 3 != KIND_LEN {
            if e == SLOW {
                let Some((sym, len)) = lit.slow(buf) else {
                    break Err(Bad::Code);
                };
                e = lit_info(sym) | len;
                if e & KIND == 0 {
                    literal!(e);
                    refill!();
                    e = lt[(buf & lit_mask) as usize];
                    continue;
                }
            }
            match e >> 4 & 3 {
                KIND_LEN => {}
                KIND_EOB => {
                    buf >>= e & 15;
                    cnt -= e & 15;
                    break Ok(true);
                }
                _ => break Err(Bad::Code),
            }
        }
        // A length, then its distance (≤ 15 + 5 + 15 + 13 bits, within the
        // 56 buffered). Code and extra bits go out in one shift; the extra
        // value comes from the bits saved before it.
        let (code, extra) = (e & 15, e >> 8 & 15);
        let saved = buf;
        buf >>= code + extra;
        cnt -= code + extra;
        let len = (e >> 16) as usize + ((saved >> code) & ((1u64 << extra) - 1)) as usize;
        let mut d = dt[(buf & dist_mask) as usize];
        if d & KIND != 0 {
            if d != SLOW {
                break Err(Bad::Code);
            }
            let Some((sym, l)) = dist.slow(buf) else {
                break Err(Bad::Code);
            };
            d = dist_info(sym) | l;
            if d & KIND != 0 {
                break Err(Bad::Code);
            }
        }
        let (code, extra) = (d & 15, d >> 8 & 15);
        let saved = buf;
        buf >>= code + extra;
        cnt -= code + extra;
        let distance = (d >> 16) as usize + ((saved >> code) & ((1u64 << extra) - 1)) as usize;
        if distance > p {
            break Err(Bad::Distance);
        }
        // The next entry is looked up before the copy, so that its load
        // overlaps the copy's stores.
        refill!();
        e = lt[(buf & lit_mask) as usize];
        // SAFETY: src = p - distance ≥ 0; writes end before
        // p + len + OVERSHOOT ≤ limit + 1 + MAX_MATCH + OVERSHOOT,
        // within out (asserted above); reads stay below the writes.
        unsafe { copy_match(base, p, distance, len) };
        p += len;
    };
    *pos = p;
    outer.buf = buf;
    outer.cnt = cnt;
    outer.pos = ip;
    result
}

/// out[p..p + len] = out[p - distance..], with overlap meaning repetition
/// (§3.2.3). May write up to OVERSHOOT cells past the end.
#[inline(always)]
unsafe fn copy_match<T: Copy>(base: *mut T, p: usize, distance: usize, len: usize) {
    // SAFETY: the caller guarantees the ranges (see the hot loop).
    unsafe {
        let dst = base.add(p);
        if distance >= 16 {
            // 16-cell chunks never overlap the cells they read from.
            let src = base.add(p - distance);
            let mut k = 0;
            while k < len {
                std::ptr::copy_nonoverlapping(src.add(k), dst.add(k), 16);
                k += 16;
            }
        } else if distance == 1 {
            let v = *dst.sub(1);
            for k in 0..len {
                *dst.add(k) = v;
            }
        } else {
            // The output is periodic with period `distance` from p − distance
            // on, so any multiple of it is a valid distance too: copy cell by
            // cell until the smallest multiple ≥ 16 reaches back far enough,
            // then in non-overlapping 16-cell chunks from that far back.
            let far = distance * 16usize.div_ceil(distance);
            let head = (far - distance).min(len);
            for k in 0..head {
                *dst.add(k) = *dst.add(k).sub(distance);
            }
            let mut k = head;
            while k < len {
                std::ptr::copy_nonoverlapping(dst.add(k).sub(far), dst.add(k), 16);
                k += 16;
            }
        }
    }
}

/// Offset of the DEFLATE data in a gzip member (RFC 1952 §2.3.1).
fn deflate_offset(gz: &[u8]) -> Option<usize> {
    if gz.len() < 18 || gz[0] != 0x1f || gz[1] != 0x8b || gz[2] != 8 {
        return None;
    }
    let flags = gz[3];
    let mut at = 10;
    if flags & 4 != 0 {
        let xlen = u16::from_le_bytes([*gz.get(at)?, *gz.get(at + 1)?]) as usize;
        at += 2 + xlen;
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            at += gz.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & 2 != 0 {
        at += 2;
    }
    (at < gz.len()).then_some(at)
}

/// A block start found by `find_block`, with its first block decoded.
struct Split {
    /// Bit offset of the block start.
    bit: usize,
    /// Bit offset of the header after the first block.
    next: usize,
    /// Cells written after the window by the first block.
    cells: usize,
}

/// Finds the first bit offset in `from..to` where a dynamic block starts
/// that decodes to its end (into `out[WINDOW..]`, markers set first) and is
/// followed by a valid block header.
fn find_block(data: &[u8], from: usize, to: usize, out: &mut [u16]) -> Option<Split> {
    for (k, c) in out[..WINDOW].iter_mut().enumerate() {
        *c = (256 + k) as u16;
    }
    let mut dec = Decoder::new();
    let end = to.min(data.len().saturating_sub(16) * 8);
    // Positions where the three header bits read BFINAL = 0, BTYPE = 10
    // (bits 0, 0, 1), 56 at a time from one word: one in eight passes, and
    // only those get the per-position checks below.
    let starts = (from / 8..end.div_ceil(8)).step_by(7).flat_map(|byte| {
        let w = u64::from_le_bytes(data[byte..byte + 8].try_into().unwrap());
        let mut m = !w & !(w >> 1) & (w >> 2) & ((1 << 56) - 1);
        std::iter::from_fn(move || {
            (m != 0).then(|| {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                byte * 8 + j
            })
        })
    });
    for bit in starts.filter(|&b| b >= from && b < end) {
        // Cheap filter on the first 17 + 3·HCLEN bits: BFINAL = 0, BTYPE = 10,
        // HLIT ≤ 29, HDIST ≤ 29, and a complete code-length code.
        let byte = bit / 8;
        let w = u128::from_le_bytes(data[byte..byte + 16].try_into().unwrap()) >> (bit % 8);
        let lo = w as u64;
        if lo & 7 != 4 || (lo >> 3) & 31 > 29 || (lo >> 8) & 31 > 29 {
            continue;
        }
        let hclen = ((lo >> 13) & 15) as usize + 4;
        let mut counts = [0i32; 8];
        for k in 0..hclen {
            counts[((w >> (17 + 3 * k)) & 7) as usize] += 1;
        }
        let mut left = 1i32;
        for c in &counts[1..] {
            left = (left << 1) - c;
            if left < 0 {
                break;
            }
        }
        if left != 0 {
            continue;
        }
        if let Some(split) = try_block(&mut dec, data, bit, out) {
            return Some(split);
        }
    }
    None
}

/// Decodes the block at `bit` (strict header) and checks that another valid
/// block header follows it.
fn try_block(dec: &mut Decoder, data: &[u8], bit: usize, out: &mut [u16]) -> Option<Split> {
    let mut bits = Bits::at(data, bit);
    let state = dec.header(&mut bits, true).ok()?;
    let mut pos = WINDOW;
    let limit = out.len() - ROOM;
    if dec.run(state, &mut bits, out, &mut pos, limit) != Ok(State::Header) {
        return None;
    }
    let next = bits.bit();
    dec.header(&mut bits, false).ok()?;
    Some(Split {
        bit,
        next,
        cells: pos - WINDOW,
    })
}

/// What the second part decoded: `cells` 16-bit cells (after the window of
/// `out`), then `bytes[WINDOW..WINDOW + n]` once no marker could appear.
#[derive(Debug)]
struct Tail {
    cells: usize,
    bytes: Vec<u8>,
    n: usize,
}

impl Tail {
    fn len(&self) -> usize {
        self.cells + self.n
    }
}

/// A block boundary another thread is still looking for: decoding that
/// must end exactly there checks each block header it reaches against it.
struct StopAt {
    /// The boundary's bit offset, `UNKNOWN` until found, `FAILED` if none.
    bit: AtomicUsize,
    /// Where the search started: the boundary cannot lie before it.
    from: usize,
}

impl StopAt {
    const UNKNOWN: usize = usize::MAX;
    const FAILED: usize = usize::MAX - 1;

    fn new(from: usize) -> Self {
        Self {
            bit: AtomicUsize::new(Self::UNKNOWN),
            from,
        }
    }

    /// The boundary, once found.
    fn known(&self) -> Option<usize> {
        let s = self.bit.load(Ordering::Acquire);
        (s != Self::UNKNOWN && s != Self::FAILED).then_some(s)
    }

    fn set(&self, bit: Option<usize>) {
        self.bit
            .store(bit.unwrap_or(Self::FAILED), Ordering::Release);
    }

    /// At a block header at `bit`: `Ok(true)` to stop there, `Ok(false)` to
    /// go on, an error if decoding ran past the boundary without a header on
    /// it (then one of the two was not a real block start).
    fn reached(&self, bit: usize) -> Result<bool, Bad> {
        let mut stop = self.bit.load(Ordering::Acquire);
        while stop == Self::UNKNOWN && bit >= self.from {
            // Rare: the search is a few blocks long, this decode megabytes.
            std::thread::yield_now();
            stop = self.bit.load(Ordering::Acquire);
        }
        match stop {
            Self::FAILED => Err(Bad::Input),
            Self::UNKNOWN => Ok(false),
            s if bit == s => Ok(true),
            s if bit > s => Err(Bad::Header),
            _ => Ok(false),
        }
    }
}

/// Continues decoding at block header `bit` after `done` cells (past the
/// window of `out`) until the end of the stream, the end of the buffers, the
/// shared `target` (values wanted after the window; `usize::MAX` while not
/// known yet) or a block header at `stop`. Once the last 32 KiB hold no
/// marker none can appear again (copies reach back at most that far), and
/// decoding goes on into bytes.
fn decode_from(
    data: &[u8],
    bit: usize,
    out: &mut [u16],
    done: usize,
    target: &AtomicUsize,
    stop: Option<&StopAt>,
) -> Result<Tail, Bad> {
    let mut dec = Decoder::new();
    let mut bits = Bits::at(data, bit);
    let mut pos = WINDOW + done;
    let cap = out.len() - ROOM;
    let mut state = State::Header;
    let want = |cap: usize, offset: usize| {
        let t = target.load(Ordering::Acquire);
        if t == usize::MAX {
            cap
        } else {
            offset.saturating_add(t).min(cap)
        }
    };
    // 16-bit cells while markers may still be copied.
    loop {
        let hard = want(cap, WINDOW);
        if pos >= hard || state == State::Done {
            return Ok(Tail {
                cells: pos - WINDOW,
                bytes: Vec::new(),
                n: 0,
            });
        }
        if pos >= 2 * WINDOW && out[pos - WINDOW..pos].iter().all(|&c| c < 256) {
            break;
        }
        if state == State::Header {
            if let Some(stop) = stop
                && stop.reached(bits.bit())?
            {
                return Ok(Tail {
                    cells: pos - WINDOW,
                    bytes: Vec::new(),
                    n: 0,
                });
            }
            state = dec.header(&mut bits, false)?;
        }
        // Look at the target (and for markers) every 256 KiB of output.
        let limit = hard.min(pos + (1 << 18));
        state = dec.run(state, &mut bits, out, &mut pos, limit)?;
    }
    let cells = pos - WINDOW;
    let mut bytes = pages::zeroed::<u8>(WINDOW + (cap - pos) + ROOM);
    for (b, &c) in bytes[..WINDOW].iter_mut().zip(&out[pos - WINDOW..pos]) {
        *b = c as u8;
    }
    let cap8 = bytes.len() - ROOM;
    let mut pos8 = WINDOW;
    let mut handed_off = false;
    loop {
        // The target counts the cells too.
        let t = target.load(Ordering::Acquire);
        let hard = if t == usize::MAX {
            cap8
        } else {
            (WINDOW + t.saturating_sub(cells)).min(cap8)
        };
        if pos8 >= hard || state == State::Done {
            return Ok(Tail {
                cells,
                bytes,
                n: pos8 - WINDOW,
            });
        }
        if state == State::Header
            && let Some(stop) = stop
        {
            if stop.reached(bits.bit())? {
                return Ok(Tail {
                    cells,
                    bytes,
                    n: pos8 - WINDOW,
                });
            }
            // With the boundary known, libdeflate takes over up to it
            // (tried once: a failure means decoding on here, and an error
            // at the boundary if it was not a real one).
            if !handed_off
                && let Some(s) = stop.known()
                && s >= bits.bit() + HANDOFF_MIN_BITS
            {
                handed_off = true;
                if let Some(end) =
                    resume_with_libdeflate(data, bits.bit(), s, &mut bytes[..cap8], pos8)
                {
                    return Ok(Tail {
                        cells,
                        bytes,
                        n: end - WINDOW,
                    });
                }
            }
        }
        if state == State::Header {
            state = dec.header(&mut bits, false)?;
        }
        let limit = hard.min(pos8 + (1 << 20));
        state = dec.run(state, &mut bits, &mut bytes, &mut pos8, limit)?;
    }
}

/// Where output byte `x` of `total` is expected among `compressed` bytes,
/// assuming an even compression ratio along the stream (both methods place
/// their block searches by it and leave room for the ratio varying).
fn position_estimate(compressed: usize, x: usize, total: usize) -> usize {
    (compressed as f64 * x.min(total) as f64 / total.max(1) as f64) as usize
}

/// Bytes past the last one wanted that a prefix inflate must have room for.
///
/// libdeflate inflates into the caller's buffer strictly in order and checks
/// each literal, match (≤ 258 bytes, RFC 1951 §3.2.5) and stored block
/// (≤ 65 535 bytes, §3.2.4) against the space left *before* writing it; when
/// one does not fit it stops with `InsufficientSpace`, everything before that
/// copy already final. With this much slack the failing copy starts after the
/// wanted prefix, so the prefix is complete. `prefix_inflate_is_exact` checks
/// this against a full inflate, so a libdeflate that behaved otherwise would
/// fail the tests rather than return wrong samples.
pub const PREFIX_SLACK: usize = 65_535 + MAX_MATCH + 1;

/// Share of the prefix's compressed bytes given to libdeflate (the faster
/// decoder), measured on the radiomics CTs (0.60, 0.64 and 0.67 compared,
/// five interleaved runs each: 0.64 was best on both).
const SPLIT: f64 = 0.64;

enum First {
    /// Ended at the final block: (bytes read, bytes written).
    Ended(usize, usize),
    /// Output buffer full before the end.
    Full,
    Bad,
}

fn libdeflate_raw(input: &[u8], out: &mut [u8]) -> First {
    // SAFETY: libdeflate reads `input.len()` bytes and writes at most
    // `out.len()` bytes through the pointers given; the decompressor is
    // allocated and freed here and used by this thread only.
    unsafe {
        let d = libdeflate_sys::libdeflate_alloc_decompressor();
        if d.is_null() {
            return First::Bad;
        }
        let (mut read, mut written) = (0usize, 0usize);
        let r = libdeflate_sys::libdeflate_deflate_decompress_ex(
            d,
            input.as_ptr().cast(),
            input.len(),
            out.as_mut_ptr().cast(),
            out.len(),
            &mut read,
            &mut written,
        );
        libdeflate_sys::libdeflate_free_decompressor(d);
        match r {
            libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS => First::Ended(read, written),
            libdeflate_sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE => First::Full,
            _ => First::Bad,
        }
    }
}

/// Exactly the first `needed` bytes of the gzip member `gz` inflated (a
/// stream of `total` bytes), or `None` when the two-part decode cannot be
/// used (see the module docs). `gz` is patched while the first part is
/// decoded and restored before this returns.
pub fn inflate_prefix(gz: &mut [u8], needed: usize, total: usize) -> Option<Inflated> {
    let start = deflate_offset(gz)?;
    let deflate = &mut gz[start..];
    // The split: libdeflate gets the larger share of the compressed bytes
    // the prefix spans, assuming an even ratio along the stream.
    let span = position_estimate(deflate.len(), needed, total);
    let from = (span as f64 * SPLIT) as usize * 8;
    let mut second = pages::zeroed::<u16>(WINDOW + needed + ROOM);
    // zlib ends a block every 16 Ki symbols (default memLevel): a few tens
    // of KiB of input, so a start is normally found within one.
    let split = find_block(deflate, from, from + 8 * (1 << 20), &mut second)?;
    let (q, r) = (split.bit / 8, split.bit % 8);
    // The second part goes on after its first block, past the patched bytes.
    if split.next < (q + 3) * 8 {
        return None;
    }
    let saved = [deflate[q], deflate[q + 1], deflate[q + 2]];
    // The empty final fixed block at the split: BFINAL = 1 and BTYPE = 01
    // (bits r and r + 1), then the seven 0 bits of code 256.
    let v = (saved[0] as u32 & ((1 << r) - 1)) | 0b11 << r;
    deflate[q] = v as u8;
    deflate[q + 1] = (v >> 8) as u8;
    deflate[q + 2] = 0;
    let expect_in = (split.bit + 10).div_ceil(8);
    let target = AtomicUsize::new(usize::MAX);
    let mut first = pages::zeroed::<u8>(needed + PREFIX_SLACK);
    let (head, tail) = deflate.split_at_mut(q + 3);
    let tail_bit = split.next - (q + 3) * 8;
    let (one, two) = std::thread::scope(|s| {
        let tail: &[u8] = tail;
        let (target, second) = (&target, &mut second);
        let two = s.spawn(move || decode_from(tail, tail_bit, second, split.cells, target, None));
        let one = libdeflate_raw(head, &mut first);
        let stop = match one {
            First::Ended(read, written) if read == expect_in => needed.saturating_sub(written),
            _ => 0,
        };
        target.store(stop, Ordering::Release);
        (one, two.join().unwrap_or(Err(Bad::Input)))
    });
    deflate[q..q + 3].copy_from_slice(&saved);
    let written = match one {
        First::Full => {
            // The prefix ended before the split: libdeflate alone has it.
            return Some(Inflated::whole(first, needed));
        }
        First::Ended(read, written) if read == expect_in => written,
        _ => return None,
    };
    if written >= needed {
        return Some(Inflated::whole(first, needed));
    }
    let want = needed - written;
    let two = two.ok()?;
    if two.len() < want {
        return None;
    }
    // Markers → bytes through a table: 256 literals, then the window.
    let mut lut = vec![0u8; 256 + WINDOW];
    for (i, v) in lut[..256].iter_mut().enumerate() {
        *v = i as u8;
    }
    let known = written.min(WINDOW);
    lut[256 + WINDOW - known..].copy_from_slice(&first[written - known..written]);
    let ncells = two.cells.min(want);
    let cells = &second[WINDOW..WINDOW + ncells];
    if known < WINDOW {
        // Markers before the start of the stream: not a real split.
        let lowest = (256 + WINDOW - known) as u16;
        if cells.iter().any(|&c| c >= 256 && c < lowest) {
            return None;
        }
    }
    use rayon::prelude::*;
    first[written..written + ncells]
        .par_chunks_mut(1 << 18)
        .zip(cells.par_chunks(1 << 18))
        .for_each(|(o, c)| {
            for (o, &c) in o.iter_mut().zip(c) {
                *o = lut[c as usize];
            }
        });
    // What the second part decoded as bytes stays where it is: copying it
    // behind the first part would write (and page-fault) megabytes that a
    // reader of a small region never looks at.
    Some(Inflated {
        start: 0,
        head_len: written + ncells,
        head: first,
        tail: two.bytes,
        tail_at: WINDOW,
        len: needed,
    })
}

/// LSB-first bit writer (§3.1.1) for the few blocks [`length_to_end`] puts
/// in front of a stream.
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, value: u32, n: u32) {
        for k in 0..n {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let last = self.bytes.len() - 1;
            self.bytes[last] |= (((value >> k) & 1) as u8) << (self.bits % 8);
            self.bits += 1;
        }
    }

    /// A Huffman code, most significant bit first (§3.1.1).
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }
}

/// libdeflate input that resumes the DEFLATE data `data` at the block
/// header `bit`: blocks that reproduce `window` (the 32 KiB of output
/// before `bit`) and end on the same bit alignment, then `data` from `bit`
/// up to byte `until`. Returns the input and the bit at which `data`'s
/// `bit` sits in it.
///
/// libdeflate can only start at the beginning of a stream, and copies after
/// `bit` may reach up to 32 KiB back, so the blocks are:
/// - a stored block (§3.2.4) holding the window but for its last `j` bytes;
/// - for an odd alignment, one fixed-Huffman block (§3.2.6) with those `j`
///   bytes as literals: a literal takes 8 bits below 144 and 9 bits from
///   144 on, so `j` is the shortest tail with an odd count of bytes ≥ 144
///   (`None` if the last 256 bytes have none);
/// - empty fixed-Huffman blocks (10 bits) to make up the rest.
///
/// Their output is exactly the window.
fn behind_window(window: &[u8], data: &[u8], bit: usize, until: usize) -> Option<(Vec<u8>, usize)> {
    let r = bit % 8;
    let j = if r % 2 == 1 {
        let mut odd = false;
        (1..=256).find(|&j| {
            odd ^= window[WINDOW - j] >= 144;
            odd
        })?
    } else {
        0
    };
    let q = bit / 8;
    let mut w = BitWriter {
        bytes: Vec::with_capacity(WINDOW + 64 + until.saturating_sub(q)),
        bits: 0,
    };
    // BFINAL = 0, BTYPE = 00, then LEN and NLEN from the next byte.
    w.put(0, 3);
    w.bits = w.bytes.len() * 8;
    let len = (WINDOW - j) as u16;
    w.bytes.extend_from_slice(&len.to_le_bytes());
    w.bytes.extend_from_slice(&(!len).to_le_bytes());
    w.bytes.extend_from_slice(&window[..WINDOW - j]);
    w.bits = w.bytes.len() * 8;
    if j > 0 {
        // BFINAL = 0, BTYPE = 01, the literals, end of block (code 0000000).
        w.put(0b010, 3);
        for &b in &window[WINDOW - j..] {
            if b < 144 {
                w.code(0x30 + b as u32, 8);
            } else {
                w.code(0x190 + (b as u32 - 144), 9);
            }
        }
        w.code(0, 7);
    }
    while w.bits % 8 != r {
        w.put(0b010, 3);
        w.code(0, 7);
    }
    let start = w.bits;
    let mut input = w.bytes;
    if r == 0 {
        input.extend_from_slice(data.get(q..until)?);
    } else {
        // The last byte holds the blocks' r bits and the stream's others.
        let last = input.len() - 1;
        input[last] |= *data.get(q)? & !((1u8 << r) - 1);
        input.extend_from_slice(data.get(q + 1..until)?);
    }
    Some((input, start))
}

/// Output length from the block header at `bit` to the end of the DEFLATE
/// data `data` (whose final block must end in its last byte), inflated by
/// libdeflate; or `None` if that does not decode to at most `max` bytes.
///
/// Only the length is wanted, so the data goes [`behind_window`] of a
/// stand-in (zeros, and a last byte of 144 for the literal an odd
/// alignment needs). Our own decoder counting alone was no faster than
/// decoding (the Huffman decode is the cost), and libdeflate is ~1.35×
/// faster than it.
fn length_to_end(data: &[u8], bit: usize, max: usize) -> Option<usize> {
    let mut stand_in = vec![0u8; WINDOW];
    stand_in[WINDOW - 1] = 144;
    let (input, _) = behind_window(&stand_in, data, bit, data.len())?;
    // One byte of room: a stream longer than `max` ends in InsufficientSpace.
    let mut out = pages::zeroed::<u8>(WINDOW + max + 1);
    match libdeflate_raw(&input, &mut out) {
        First::Ended(read, written) if read == input.len() => {
            written.checked_sub(WINDOW).filter(|&n| n <= max)
        }
        _ => None,
    }
}

/// Below this much data to the boundary (bits) the copy and preamble of a
/// hand-off are not worth it.
const HANDOFF_MIN_BITS: usize = 8 << 16;

/// Goes on from block header `bit` to the block boundary `stop` with
/// libdeflate, once the last 32 KiB of output are known: our decoder's byte
/// loop takes ~1.35× libdeflate's time, and in the window method thread
/// one decodes megabytes past its last marker.
///
/// libdeflate can only start a stream and cannot be told where to stop, so
/// it gets a copy of the data from `bit` to `stop` [`behind_window`], and
/// at `stop` an empty final block (BFINAL = 1, BTYPE = 01 and code 256, as
/// in [`inflate_prefix`]).
///
/// `out[at - WINDOW..at]` is the window; libdeflate rewrites it with the
/// same bytes and writes on from `at`. Returns the new end of the output,
/// or `None` (then `out` from `at` on is garbage to be overwritten) when
/// the window's tail has no fitting bytes, `out` is too small, or
/// libdeflate does not end exactly at `stop`, i.e. `stop` is not a block
/// boundary of this stream.
fn resume_with_libdeflate(
    data: &[u8],
    bit: usize,
    stop: usize,
    out: &mut [u8],
    at: usize,
) -> Option<usize> {
    let window = out.get(at.checked_sub(WINDOW)?..at)?;
    let (q, qs) = (bit / 8, stop / 8);
    if qs <= q + 1 || qs + 1 > data.len() {
        return None;
    }
    let (mut input, start) = behind_window(window, data, bit, qs)?;
    let end = start + (stop - bit);
    debug_assert_eq!(input.len(), end / 8);
    let rs = end % 8;
    let v = (data[qs] as u32 & ((1 << rs) - 1)) | 0b11 << rs;
    input.extend_from_slice(&[v as u8, (v >> 8) as u8, 0]);
    let expect_in = (end + 10).div_ceil(8);
    match libdeflate_raw(&input[..expect_in], &mut out[at - WINDOW..]) {
        First::Ended(read, written) if read == expect_in && written >= WINDOW => {
            Some(at - WINDOW + written)
        }
        _ => None,
    }
}

/// Time per compressed byte of the window method's two parts relative to
/// libdeflate inflating from the start, measured on the radiomics CTs.
/// The first part: our decoder with markers (1.3–1.35×) for a few hundred
/// KiB, then libdeflate ([`resume_with_libdeflate`]); 1.05–1.1 balanced the
/// two threads best on lung1 (end-to-end medians 15.5–16.4 ms, against
/// 16.0–17.3 at 0.9–1.0 and 17.0–17.5 at 1.35). The second part,
/// [`length_to_end`] (libdeflate behind a preamble, plus copying the
/// input): ~1.05×.
const COST_DECODE: f64 = 1.1;
const COST_LENGTH: f64 = 1.05;
/// Output decoded before the wanted range so that no marker is left in it:
/// on the radiomics CTs the last 32 KiB held no marker after 160–630 KiB
/// of output from a block start; the rest is room for the compression
/// ratio varying along the stream (the start is placed as if it did not).
const LEAD: usize = 1 << 20;

/// Where a range is decoded from without the stream before it: the bit
/// offsets at which the two block searches start (`None` when inflating
/// the prefix is estimated to be cheaper).
fn window_plan(body: usize, from: usize, to: usize, total: usize) -> Option<(usize, usize)> {
    let at = |x: usize| position_estimate(body, x, total);
    let b1 = at(from.saturating_sub(LEAD));
    // Balance the two threads: the first decodes b1..b2, the second
    // measures b2..end; b2 also leaves room past `to` for the ratio varying.
    let r = COST_DECODE / COST_LENGTH;
    let balanced = (body as f64 + r * b1 as f64) / (1.0 + r);
    let b2 = (balanced as usize).max(at(to + LEAD / 4));
    let window = ((b2 - b1) as f64 * COST_DECODE).max((body - b2.min(body)) as f64 * COST_LENGTH);
    let prefix = at(to) as f64 * SPLIT;
    (b1 > 0 && b2 < body && window < 0.8 * prefix).then_some((b1 * 8, b2 * 8))
}

/// Bytes `from..to` of a gzip member's output (a stream of `total` bytes),
/// or `None` when this cannot be done on two cores; picks whichever of the
/// two methods below is estimated cheaper.
///
/// - [`inflate_prefix`] inflates everything before `to`, split between
///   libdeflate and our decoder.
/// - The window method never inflates the stream before the range: one
///   thread finds a block start shortly before `from` and decodes with
///   markers from there (a range with no marker left is exact whatever
///   came before, §3.2.5: copies reach back at most 32 KiB; once none is
///   left in the window, libdeflate takes over up to the other thread's
///   block start, [`resume_with_libdeflate`]), the other
///   finds a block start after `to` and measures the length of the rest
///   of the stream ([`length_to_end`]), which with the gzip trailer's
///   ISIZE (RFC 1952 §2.3.1) places both on the stream. The first must
///   reach the second's block start exactly, and the second must end
///   exactly at the trailer: a false block start would not. Worth it for a
///   small region late in a stream (lung1: slices 32–34 of 48, 9.7 vs
///   18.9 ms for the prefix). If it does not work out (markers left in the
///   range, a block start not confirmed), the prefix method runs after it.
///
/// Neither method can check the gzip CRC-32, which covers the whole stream;
/// the serial path (`nrrd::gunzip`) does. A damaged stream that still
/// decodes goes unnoticed here, and the window method reads the whole rest
/// of the stream to place the range, so damage after the range can shift
/// it (a changed length code) where the prefix method would not be affected.
pub fn inflate_range(gz: &mut [u8], from: usize, to: usize, total: usize) -> Option<Inflated> {
    let start = deflate_offset(gz)?;
    let body = (gz.len() - start).saturating_sub(8);
    if let Some((b1, b2)) = window_plan(body, from, to, total)
        && let Some(window) = inflate_window(&gz[start..], from, to, total, b1, b2)
    {
        return Some(window);
    }
    inflate_prefix(gz, to, total)
}

/// The window method of [`inflate_range`] on the DEFLATE data and trailer
/// `deflate`, block searches from bits `b1` and `b2`.
fn inflate_window(
    deflate: &[u8],
    from: usize,
    to: usize,
    total: usize,
    b1: usize,
    b2: usize,
) -> Option<Inflated> {
    let n = deflate.len();
    if n < 16 || u32::from_le_bytes(deflate[n - 4..].try_into().ok()?) != total as u32 {
        return None;
    }
    let stop = StopAt::new(b2);
    let never = AtomicUsize::new(usize::MAX);
    let mut cells = pages::zeroed::<u16>(WINDOW + total + ROOM);
    let (one, two) = std::thread::scope(|s| {
        let stop = &stop;
        let two = s.spawn(move || {
            // A block's output is at most 16 Ki symbols × 258 with zlib.
            let mut first = pages::zeroed::<u16>(WINDOW + (4 << 20) + ROOM);
            let split = find_block(deflate, b2, b2 + 8 * (1 << 20), &mut first);
            stop.set(split.as_ref().map(|s| s.bit));
            length_to_end(&deflate[..n - 8], split?.bit, total)
        });
        let one = find_block(deflate, b1, b2, &mut cells).and_then(|split| {
            decode_from(
                deflate,
                split.next,
                &mut cells,
                split.cells,
                &never,
                Some(stop),
            )
            .ok()
        });
        (one, two.join().ok().flatten())
    });
    // `length_to_end` checked that the final block ends where the trailer
    // begins (one member, nothing after it).
    let (one, counted) = (one?, two?);
    let off2 = total.checked_sub(counted)?;
    let off1 = off2.checked_sub(one.len())?;
    if off1 > from || to > off2 {
        return None;
    }
    let (a, b) = (from - off1, to - off1);
    let in_cells = &cells[WINDOW + a.min(one.cells)..WINDOW + b.min(one.cells)];
    if in_cells.iter().any(|&c| c >= 256) {
        return None;
    }
    let head: Vec<u8> = in_cells.iter().map(|&c| c as u8).collect();
    Some(Inflated {
        start: from,
        head_len: head.len(),
        head,
        tail: one.bytes,
        tail_at: WINDOW + a.max(one.cells) - one.cells,
        len: to,
    })
}

/// Inflated bytes `start..len` of a stream: the first `head_len` in `head`,
/// the rest (if any) in `tail` from `tail_at` on.
#[derive(Debug)]
pub struct Inflated {
    start: usize,
    head: Vec<u8>,
    head_len: usize,
    tail: Vec<u8>,
    tail_at: usize,
    len: usize,
}

impl Inflated {
    fn whole(head: Vec<u8>, len: usize) -> Self {
        Self {
            start: 0,
            head,
            head_len: len,
            tail: Vec::new(),
            tail_at: 0,
            len,
        }
    }

    /// Offset in the stream of the first byte held (0 for a prefix).
    pub fn start(&self) -> usize {
        self.start
    }

    /// Offset in the stream just past the last byte held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == self.start
    }

    /// `len` bytes from stream offset `start`: borrowed unless they straddle
    /// the two pieces. Panics outside `self.start()..self.len()`, like slice
    /// indexing.
    pub fn get(&self, start: usize, len: usize) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        let end = start + len;
        assert!(
            self.start <= start && end <= self.len,
            "{start}..{end} is outside {}..{}",
            self.start,
            self.len
        );
        let (start, end) = (start - self.start, end - self.start);
        let at = |i: usize| self.tail_at + i - self.head_len;
        if end <= self.head_len {
            Cow::Borrowed(&self.head[start..end])
        } else if start >= self.head_len {
            Cow::Borrowed(&self.tail[at(start)..at(end)])
        } else {
            let mut v = self.head[start..self.head_len].to_vec();
            v.extend_from_slice(&self.tail[at(self.head_len)..at(end)]);
            Cow::Owned(v)
        }
    }

    /// All bytes held, in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.get(self.start, self.len - self.start).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// CT-like 16-bit samples: a smooth field plus noise, so that the
    /// stream has literals, short and long matches like a real CT.
    fn ct_like(n: usize, seed: u64) -> Vec<u8> {
        ct_with_noise(n, seed, 24)
    }

    /// As `ct_like` with noise of `levels` HU steps: with a few hundred, as
    /// in a real CT, values keep being written as literals rather than
    /// copied, so markers do not outlive a few hundred KiB (what the window
    /// method needs, and what the radiomics CTs show). With 24, copies of
    /// copies carry them through whole megabytes.
    fn ct_with_noise(n: usize, seed: u64, levels: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(2 * n);
        for i in 0..n {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (x, y) = ((i % 512) as f64, (i / 512) as f64);
            let field = if (x - 256.0).hypot(y % 512.0 - 256.0) < 200.0 {
                40.0 + 30.0 * (x / 37.0).sin() * (y / 53.0).cos()
            } else {
                -1000.0
            };
            let noise = ((state >> 33) % levels) as f64 - (levels / 2) as f64;
            let v = (field + noise) as i16;
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn gzip_flate2(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gzip_libdeflate(data: &[u8], level: i32) -> Vec<u8> {
        let lvl = libdeflater::CompressionLvl::new(level).unwrap();
        let mut c = libdeflater::Compressor::new(lvl);
        let mut out = vec![0; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Every prefix the two-core path returns equals the same prefix of the
    /// data, for streams from two encoders at several levels, and the path
    /// is actually taken for most prefixes (not a test of the fallback).
    #[test]
    fn two_core_prefix_equals_the_data() {
        let data = ct_like(1 << 20, 7);
        let streams = [
            ("flate2 1", gzip_flate2(&data, 1)),
            ("flate2 6", gzip_flate2(&data, 6)),
            ("flate2 9", gzip_flate2(&data, 9)),
            ("libdeflate 1", gzip_libdeflate(&data, 1)),
            ("libdeflate 6", gzip_libdeflate(&data, 6)),
            ("libdeflate 12", gzip_libdeflate(&data, 12)),
        ];
        for (name, gz) in streams {
            let mut gz2 = gz.clone();
            let mut taken = 0;
            for k in [3usize, 5, 7, 8, 9, 10, 11, 12] {
                let needed = data.len() * k / 12;
                if let Some(got) = inflate_prefix(&mut gz2, needed, data.len()) {
                    assert_eq!(got.len(), needed, "{name}, prefix {k}/12");
                    assert!(
                        got.to_vec() == data[..needed],
                        "{name}: prefix {k}/12 differs"
                    );
                    // Ranges across the two pieces read the same bytes.
                    for start in (0..needed).step_by(needed / 7 + 1) {
                        let n = (needed - start).min(100_003);
                        assert!(got.get(start, n)[..] == data[start..start + n]);
                    }
                    taken += 1;
                }
                assert!(gz2 == gz, "{name}: input not restored");
            }
            assert!(taken >= 6, "{name}: two-core path taken {taken}/8 times");
        }
    }

    /// Streams without dynamic blocks (stored only) fall back, and damaged
    /// streams never panic and never return a prefix of the wrong length.
    #[test]
    fn stored_and_damaged_streams_fall_back_or_decode() {
        let data = ct_like(1 << 19, 3);
        let mut stored = gzip_flate2(&data, 0);
        let n = data.len() * 3 / 4;
        if let Some(got) = inflate_prefix(&mut stored, n, data.len()) {
            assert!(got.to_vec() == data[..n]);
        }
        let gz = gzip_libdeflate(&data, 6);
        for at in [gz.len() / 2, gz.len() * 2 / 3, gz.len() * 5 / 6] {
            let mut bad = gz.clone();
            bad[at] ^= 0x5a;
            bad[at + 1] ^= 0xa5;
            if let Some(got) = inflate_prefix(&mut bad, n, data.len()) {
                assert_eq!(got.len(), n);
            }
        }
        // Not gzip at all, or cut short.
        assert!(inflate_prefix(&mut data.clone(), n, data.len()).is_none());
        let mut short = gz[..gz.len() / 3].to_vec();
        assert!(inflate_prefix(&mut short, n, data.len()).is_none());
    }

    /// Block starts of a stream and how much output precedes each: a walk
    /// with our decoder from the start.
    fn block_starts(deflate: &[u8], total: usize) -> Vec<(usize, usize)> {
        let mut dec = Decoder::new();
        let mut bits = Bits::at(deflate, 0);
        let mut out = vec![0u8; total + 1 + ROOM];
        let (mut pos, mut state, mut starts) = (0, State::Header, Vec::new());
        loop {
            state = match state {
                State::Done => return starts,
                State::Header => {
                    starts.push((bits.bit(), pos));
                    dec.header(&mut bits, false).unwrap()
                }
                _ => dec
                    .run(state, &mut bits, &mut out, &mut pos, total + 1)
                    .unwrap(),
            };
        }
    }

    /// libdeflate behind the stand-in preamble measures the rest of the
    /// stream exactly from block starts at every bit alignment, and refuses
    /// a stream that does not end where it is told to or is longer than the
    /// bound.
    #[test]
    fn length_to_end_is_exact_at_every_bit_alignment() {
        let data = ct_like(1 << 19, 5);
        let mut phases = [false; 8];
        for gz in [
            gzip_flate2(&data, 1),
            gzip_flate2(&data, 6),
            gzip_flate2(&data, 9),
            gzip_libdeflate(&data, 6),
            gzip_libdeflate(&data, 12),
        ] {
            let d = &gz[deflate_offset(&gz).unwrap()..gz.len() - 8];
            let starts = block_starts(d, data.len());
            assert!(starts.len() > 4, "{} blocks", starts.len());
            for &(bit, before) in starts.iter().step_by(3) {
                phases[bit % 8] = true;
                let rest = data.len() - before;
                assert_eq!(length_to_end(d, bit, data.len()), Some(rest), "bit {bit}");
                assert_eq!(length_to_end(d, bit, rest - 1), None, "over the bound");
            }
            let &(bit, _) = starts.last().unwrap();
            assert_eq!(length_to_end(&d[..d.len() - 1], bit, data.len()), None);
        }
        assert!(phases.iter().all(|&p| p), "bit alignments seen: {phases:?}");
    }

    /// The window method returns exactly the range asked for, from streams
    /// of two encoders, for ranges in the middle and near the end; and
    /// `inflate_range` gives the same bytes whichever method it picks.
    #[test]
    fn window_range_equals_the_data() {
        let data = ct_with_noise(3 << 20, 9, 300);
        let total = data.len();
        let mut taken = 0;
        for gz in [gzip_flate2(&data, 6), gzip_libdeflate(&data, 6)] {
            let start = deflate_offset(&gz).unwrap();
            let body = gz.len() - start - 8;
            for (f, t) in [(0.55, 0.6), (0.7, 0.75), (0.8, 0.88), (0.6, 1.0)] {
                let (from, to) = ((total as f64 * f) as usize, (total as f64 * t) as usize);
                let at = |x: usize| (body as f64 * x as f64 / total as f64) as usize * 8;
                let (b1, b2) = (at(from - LEAD), at(to));
                if let Some(w) = inflate_window(&gz[start..], from, to, total, b1, b2) {
                    assert_eq!((w.start(), w.len()), (from, to));
                    assert!(w.to_vec() == data[from..to], "{f}..{t} differs");
                    for s in (from..to).step_by((to - from) / 5 + 1) {
                        let n = (to - s).min(70_001);
                        assert!(w.get(s, n)[..] == data[s..s + n]);
                    }
                    taken += 1;
                }
                let mut gz2 = gz.clone();
                let got = inflate_range(&mut gz2, from, to, total).unwrap();
                assert!(got.start() <= from && got.len() >= to);
                assert!(got.get(from, to - from)[..] == data[from..to]);
                assert!(gz2 == gz, "input not restored");
            }
        }
        // (A range that ends with the stream has no block start after it.)
        assert_eq!(taken, 6, "window method taken {taken}/6 times");
    }

    /// libdeflate resumes at a block start behind the crafted preamble and
    /// stops exactly at a later one, at every bit alignment the streams
    /// offer (odd ones through the literal block); a stop that is not a
    /// block start is refused.
    #[test]
    fn libdeflate_resumes_exactly_between_two_block_starts() {
        let data = ct_with_noise(1 << 20, 5, 300);
        let total = data.len();
        let mut phases = [0usize; 8];
        for gz in [
            gzip_flate2(&data, 1),
            gzip_flate2(&data, 6),
            gzip_libdeflate(&data, 9),
        ] {
            let deflate = &gz[deflate_offset(&gz).unwrap()..];
            let starts = block_starts(deflate, total);
            let usable: Vec<_> = starts.iter().filter(|s| s.1 >= WINDOW).collect();
            assert!(usable.len() > 8, "{} blocks", usable.len());
            for pair in usable.windows(4) {
                let ((bit, at), (stop, end)) = (*pair[0], *pair[3]);
                let mut out = vec![0u8; total + ROOM];
                out[..at].copy_from_slice(&data[..at]);
                let got = resume_with_libdeflate(deflate, bit, stop, &mut out, at);
                assert_eq!(got, Some(end), "block at bit {bit}");
                assert!(
                    out[..end] == data[..end],
                    "block at bit {bit}: bytes differ"
                );
                phases[bit % 8] += 1;
                out[at..].fill(0);
                assert_eq!(
                    resume_with_libdeflate(deflate, bit, stop - 1, &mut out, at),
                    None
                );
            }
        }
        assert!(phases.iter().all(|&n| n > 0), "alignments seen: {phases:?}");
    }

    /// Damage anywhere never panics: a range comes back at the size asked
    /// for, or not at all.
    #[test]
    fn damaged_streams_never_panic_in_the_window_method() {
        let data = ct_with_noise(3 << 20, 4, 300);
        let total = data.len();
        let gz = gzip_libdeflate(&data, 6);
        let (from, to) = (total * 7 / 10, total * 3 / 4);
        for at in [
            gz.len() / 3,
            gz.len() * 2 / 3,
            gz.len() * 9 / 10,
            gz.len() - 6,
        ] {
            let mut bad = gz.clone();
            bad[at] ^= 0x5a;
            bad[at + 1] ^= 0xa5;
            if let Some(got) = inflate_range(&mut bad, from, to, total) {
                assert_eq!(got.get(from, to - from).len(), to - from);
            }
        }
        // A trailer whose ISIZE does not match: not a stream of `total`.
        let mut short = gz.clone();
        let n = short.len();
        short[n - 4] ^= 1;
        let start = deflate_offset(&short).unwrap();
        assert!(inflate_window(&short[start..], from, to, total, 8, 8 * (n / 2)).is_none());
    }

    /// The decoder alone, from the start of a stream (no markers), matches
    /// the data: fixed, dynamic and stored blocks.
    #[test]
    fn decoder_from_the_start_matches() {
        let data = ct_like(1 << 17, 11);
        for (level, gz) in [
            (0, gzip_flate2(&data, 0)),
            (1, gzip_flate2(&data, 1)),
            (9, gzip_flate2(&data, 9)),
            (12, gzip_libdeflate(&data, 12)),
            // A short input: one fixed-Huffman block.
            (
                99,
                gzip_flate2(b"a fixed block, a fixed block, a fixed block", 6),
            ),
        ] {
            let expect: &[u8] = if level == 99 {
                b"a fixed block, a fixed block, a fixed block"
            } else {
                &data
            };
            let start = deflate_offset(&gz).unwrap();
            let mut out = vec![0u16; WINDOW + expect.len() + ROOM];
            let target = AtomicUsize::new(expect.len());
            let tail = decode_from(&gz[start..], 0, &mut out, 0, &target, None).unwrap();
            assert_eq!(tail.len(), expect.len(), "level {level}");
            let mut got: Vec<u8> = out[WINDOW..WINDOW + tail.cells]
                .iter()
                .map(|&c| {
                    assert!(c < 256, "marker from a stream start");
                    c as u8
                })
                .collect();
            if tail.n > 0 {
                got.extend_from_slice(&tail.bytes[WINDOW..WINDOW + tail.n]);
            }
            assert!(got == expect, "level {level}");
        }
    }
}
