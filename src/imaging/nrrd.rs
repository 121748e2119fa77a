//! NRRD reader and writer (Teem's "nearly raw raster data", NRRD0001–NRRD0005).
//!
//! Supported: attached data (the header and the data in one `.nrrd` file), 3-D
//! scalar volumes, encodings `raw`, `gzip` and `ascii`, every integer and
//! floating-point sample type, either endianness, `space directions`,
//! `space origin`, `spacings`, and `space` in LPS or RAS (RAS is turned into
//! LPS, the convention of DICOM, ITK and [`Volume`]). Detached headers
//! (`data file:`), `bzip2` and `hex` are refused with a clear error.
//!
//! Format reference: <http://teem.sourceforge.net/nrrd/format.html>.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::inflate;
use super::pages;
use super::volume::Volume;

/// What can go wrong while reading or writing an NRRD file.
#[derive(Debug, thiserror::Error)]
pub enum NrrdError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an NRRD file (it does not start with the magic line NRRD000n)")]
    NotNrrd { path: PathBuf },
    #[error("{path}: unsupported NRRD version {version} (1 to 5 are supported)")]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error("{path}: header line {line} is malformed: {reason}")]
    BadHeaderLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: required field `{field}` is missing from the header")]
    MissingField { path: PathBuf, field: &'static str },
    #[error("{path}: field `{field}` has an invalid value {value:?}: {reason}")]
    BadField {
        path: PathBuf,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{path}: unsupported sample type {kind:?}")]
    UnsupportedType { path: PathBuf, kind: String },
    #[error("{path}: unsupported encoding {encoding:?} (raw, gzip and ascii are supported)")]
    UnsupportedEncoding { path: PathBuf, encoding: String },
    #[error("{path}: only 3-D scalar volumes are supported, the header says dimension {dimension}")]
    UnsupportedDimension { path: PathBuf, dimension: usize },
    #[error("{path}: detached data files (`data file: {data_file}`) are not supported")]
    DetachedData { path: PathBuf, data_file: String },
    #[error("{path}: data is truncated: expected {expected} bytes of samples, found {found}")]
    Truncated {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{path}: gzip data is corrupt: {source}")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: ascii data is malformed at sample {index}: {token:?}")]
    BadAscii {
        path: PathBuf,
        index: usize,
        token: String,
    },
    #[error("{path}: the requested region {region:?} lies outside the volume {dims:?}")]
    BadRegion {
        path: PathBuf,
        region: [Range<usize>; 3],
        dims: [usize; 3],
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Sample types NRRD allows (format spec, "type:").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleType {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl SampleType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "signed char" | "int8" | "int8_t" | "char" => Self::I8,
            "uchar" | "unsigned char" | "uint8" | "uint8_t" => Self::U8,
            "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
                Self::I16
            }
            "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => Self::U16,
            "int" | "signed int" | "int32" | "int32_t" => Self::I32,
            "uint" | "unsigned int" | "uint32" | "uint32_t" => Self::U32,
            "longlong"
            | "long long"
            | "long long int"
            | "signed long long"
            | "signed long long int"
            | "int64"
            | "int64_t" => Self::I64,
            "ulonglong"
            | "unsigned long long"
            | "unsigned long long int"
            | "uint64"
            | "uint64_t" => Self::U64,
            "float" => Self::F32,
            "double" => Self::F64,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::I8 => "signed char",
            Self::U8 => "uchar",
            Self::I16 => "short",
            Self::U16 => "ushort",
            Self::I32 => "int",
            Self::U32 => "uint",
            Self::I64 => "longlong",
            Self::U64 => "ulonglong",
            Self::F32 => "float",
            Self::F64 => "double",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

/// The parsed header of an attached-data NRRD file.
#[derive(Debug, Clone)]
pub struct NrrdHeader {
    pub sample_type: SampleType,
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    /// LPS patient-space origin (mm).
    pub origin: [f64; 3],
    /// Direction cosines in LPS, `direction[r][i]` = component `r` of axis `i`.
    pub direction: [[f64; 3]; 3],
    big_endian: bool,
    encoding: Encoding,
    line_skip: usize,
    /// `None` means `byte skip: -1` (raw data sits at the end of the file).
    byte_skip: Option<usize>,
    /// Byte offset of the data in the file (just after the blank line).
    data_offset: usize,
}

impl NrrdHeader {
    fn voxel_count(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
}

/// Reads a scalar NRRD volume as `f32` (CT in HU, for instance).
pub fn read_nrrd_f32(path: &Path) -> Result<Volume<f32>, NrrdError> {
    let bytes = read_file(path)?;
    let header = parse_header(path, &bytes)?;
    let full = full_region(&header);
    decode(path, &bytes, &header, full, |v| v as f32)
}

/// Reads only `region` (x, y, z index ranges) of a scalar NRRD volume as `f32`.
///
/// gzip data is decompressed only up to the region's last slice, and only the
/// region's samples are converted: loading a tumour's bounding box from a whole
/// CT costs a fraction of loading the CT. The returned volume's origin is the
/// physical position of the region's first voxel.
pub fn read_nrrd_f32_region(
    path: &Path,
    region: [Range<usize>; 3],
) -> Result<Volume<f32>, NrrdError> {
    let bytes = read_file(path)?;
    let header = parse_header(path, &bytes)?;
    let region = check_region(path, region, header.dims)?;
    decode(path, &bytes, &header, region, |v| v as f32)
}

/// `region` if it is a non-empty box inside `dims`, else `BadRegion`.
fn check_region(
    path: &Path,
    region: [Range<usize>; 3],
    dims: [usize; 3],
) -> Result<[Range<usize>; 3], NrrdError> {
    let ok = region
        .iter()
        .zip(dims)
        .all(|(r, n)| r.start < r.end && r.end <= n);
    if !ok {
        return Err(NrrdError::BadRegion {
            path: path.to_path_buf(),
            region,
            dims,
        });
    }
    Ok(region)
}

/// Reads a label map and keeps one label: voxels equal to `label` become 1,
/// all others 0.
pub fn read_nrrd_mask(path: &Path, label: i64) -> Result<Volume<u8>, NrrdError> {
    let bytes = read_file(path)?;
    let header = parse_header(path, &bytes)?;
    let full = full_region(&header);
    let label = label as f64;
    decode(path, &bytes, &header, full, |v| u8::from(v == label))
}

/// A label map cropped to the bounding box of one label.
#[derive(Debug, Clone)]
pub struct CroppedMask {
    /// Header of the whole file (its geometry is the full volume's).
    pub header: NrrdHeader,
    /// Index ranges (x, y, z) of the label's bounding box in the full volume.
    pub region: [Range<usize>; 3],
    /// 1 where the label is, 0 elsewhere, over `region` (origin adjusted).
    pub mask: Volume<u8>,
}

/// Reads a label map, finds the bounding box of `label` directly on the
/// decoded samples and returns only that box as a binary mask — no
/// whole-volume mask is built. `None` if the label does not occur.
pub fn read_nrrd_mask_cropped(path: &Path, label: i64) -> Result<Option<CroppedMask>, NrrdError> {
    let bytes = read_file(path)?;
    let header = parse_header(path, &bytes)?;
    let labelf = label as f64;
    if header.encoding == Encoding::Ascii {
        let full = decode(path, &bytes, &header, full_region(&header), |v| {
            u8::from(v == labelf)
        })?;
        let Some(region) = bbox_where(header.dims, |i| full.data[i] == 1) else {
            return Ok(None);
        };
        let [nx, ny, _] = header.dims;
        let mut data = Vec::with_capacity(region.iter().map(|r| r.len()).product());
        for z in region[2].clone() {
            for y in region[1].clone() {
                let row = (z * ny + y) * nx;
                data.extend_from_slice(&full.data[row + region[0].start..row + region[0].end]);
            }
        }
        let dims = [region[0].len(), region[1].len(), region[2].len()];
        let mask = region_volume(&header, region.clone(), dims, data);
        return Ok(Some(CroppedMask {
            header,
            region,
            mask,
        }));
    }
    let mut rows = LabelRows::new(&header, label);
    let row_bytes = header.dims[0] * header.sample_type.size();
    match header.encoding {
        Encoding::Raw => {
            for (i, row) in raw_samples(path, &bytes, &header)?
                .chunks_exact(row_bytes)
                .enumerate()
            {
                rows.feed(i, row);
            }
        }
        Encoding::Gzip if label != 0 => {
            match sparse_rows(&bytes, &header, LabelRows::new(&header, label)) {
                Some(sparse) => rows = sparse,
                None => stream_rows(path, &bytes, &header, |i, row| rows.feed(i, row))?,
            }
        }
        _ => stream_rows(path, &bytes, &header, |i, row| rows.feed(i, row))?,
    }
    Ok(rows.finish(header))
}

/// The label's rows of a gzip label map from [`inflate::inflate_sparse`],
/// which never writes the background's zero bytes: only rows with a
/// non-zero byte reach `rows` (a row of zeros holds no label but 0, which
/// the caller sends elsewhere). `None` where that decoder does not apply
/// (several gzip members, damaged or short data): [`stream_rows`] then
/// reads it, or says what is wrong.
fn sparse_rows(bytes: &[u8], h: &NrrdHeader, mut rows: LabelRows) -> Option<LabelRows> {
    let gz = skip_lines(&bytes[h.data_offset..], h.line_skip);
    let skip = h.byte_skip.unwrap_or(0);
    let total = h.voxel_count() * h.sample_type.size();
    let row_bytes = h.dims[0] * h.sample_type.size();
    let end = skip + total;
    let mut row = vec![0u8; row_bytes];
    let mut current: Option<usize> = None;
    let produced = inflate::inflate_sparse(gz, |mut at, mut part| {
        if at < skip {
            let cut = (skip - at).min(part.len());
            (at, part) = (at + cut, &part[cut..]);
        }
        while !part.is_empty() && at < end {
            let (index, x) = ((at - skip) / row_bytes, (at - skip) % row_bytes);
            if current != Some(index) {
                if let Some(done) = current {
                    rows.feed(done, &row);
                    row.fill(0);
                }
                current = Some(index);
            }
            let n = part.len().min(row_bytes - x).min(end - at);
            row[x..x + n].copy_from_slice(&part[..n]);
            (at, part) = (at + n, &part[n..]);
        }
    })?;
    if produced < end {
        return None;
    }
    if let Some(done) = current {
        rows.feed(done, &row);
    }
    Some(rows)
}

/// The rows of a label map that hold one label, collected while its samples
/// stream past: a mask is mostly background, so only those rows (their x
/// extent and 0/1 flags) are kept, never the whole decoded volume.
struct LabelRows {
    label: f64,
    nx: usize,
    sample: SampleType,
    big_endian: bool,
    /// (row index z·ny + y, first x, last x) of each row holding the label.
    rows: Vec<(usize, usize, usize)>,
    /// `nx` flags (1 = label) per kept row, in `rows` order.
    flags: Vec<u8>,
}

impl LabelRows {
    fn new(h: &NrrdHeader, label: i64) -> Self {
        Self {
            label: label as f64,
            nx: h.dims[0],
            sample: h.sample_type,
            big_endian: h.big_endian,
            rows: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// One row's samples (`nx` of them, file byte order).
    fn feed(&mut self, index: usize, row: &[u8]) {
        // A row of zero bytes holds only the value 0 (integers, +0.0): skip
        // it at memory speed unless 0 is the label asked for (an OR fold,
        // not `all`, so that it vectorises).
        if self.label != 0.0 && row.iter().fold(0u8, |acc, &b| acc | b) == 0 {
            return;
        }
        let at = self.flags.len();
        self.flags.resize(at + self.nx, 0);
        let flags = &mut self.flags[at..];
        let (label, be) = (self.label, self.big_endian);
        macro_rules! mark {
            ($ty:ty) => {{
                const N: usize = std::mem::size_of::<$ty>();
                for (f, s) in flags.iter_mut().zip(row.chunks_exact(N)) {
                    let mut a = [0u8; N];
                    a.copy_from_slice(s);
                    let v = if be {
                        <$ty>::from_be_bytes(a)
                    } else {
                        <$ty>::from_le_bytes(a)
                    };
                    *f = u8::from(v as f64 == label);
                }
            }};
        }
        match self.sample {
            SampleType::I8 => mark!(i8),
            SampleType::U8 => mark!(u8),
            SampleType::I16 => mark!(i16),
            SampleType::U16 => mark!(u16),
            SampleType::I32 => mark!(i32),
            SampleType::U32 => mark!(u32),
            SampleType::I64 => mark!(i64),
            SampleType::U64 => mark!(u64),
            SampleType::F32 => mark!(f32),
            SampleType::F64 => mark!(f64),
        }
        match (
            flags.iter().position(|&f| f == 1),
            flags.iter().rposition(|&f| f == 1),
        ) {
            (Some(first), Some(last)) => self.rows.push((index, first, last)),
            _ => self.flags.truncate(at),
        }
    }

    /// The bounding box of the kept rows and the mask over it, or `None`
    /// when the label never occurred.
    fn finish(self, header: NrrdHeader) -> Option<CroppedMask> {
        let ny = header.dims[1];
        let (mut x0, mut x1) = (usize::MAX, 0);
        let (mut y0, mut y1, mut z0, mut z1) = (usize::MAX, 0, usize::MAX, 0);
        for &(i, first, last) in &self.rows {
            let (z, y) = (i / ny, i % ny);
            (x0, x1) = (x0.min(first), x1.max(last));
            (y0, y1) = (y0.min(y), y1.max(y));
            (z0, z1) = (z0.min(z), z1.max(z));
        }
        if self.rows.is_empty() {
            return None;
        }
        let region = [x0..x1 + 1, y0..y1 + 1, z0..z1 + 1];
        let dims = [region[0].len(), region[1].len(), region[2].len()];
        let mut data = vec![0u8; dims.iter().product()];
        for (k, &(i, _, _)) in self.rows.iter().enumerate() {
            let (z, y) = (i / ny, i % ny);
            let to = ((z - z0) * dims[1] + (y - y0)) * dims[0];
            let from = k * self.nx + x0;
            data[to..to + dims[0]].copy_from_slice(&self.flags[from..from + dims[0]]);
        }
        let mask = region_volume(&header, region.clone(), dims, data);
        Some(CroppedMask {
            header,
            region,
            mask,
        })
    }
}

/// Inflates a gzip NRRD payload through a small buffer, handing each whole
/// row (`dims[0]` samples) to `row(index, bytes)` in order: a label map
/// inflates ~1000:1, and streaming it through a cache-sized buffer avoids
/// writing (and page-faulting) a whole-volume buffer only to scan it once.
fn stream_rows(
    path: &Path,
    bytes: &[u8],
    h: &NrrdHeader,
    mut row: impl FnMut(usize, &[u8]),
) -> Result<(), NrrdError> {
    let after_header = skip_lines(&bytes[h.data_offset..], h.line_skip);
    let total = h.voxel_count() * h.sample_type.size();
    let row_bytes = h.dims[0] * h.sample_type.size();
    let gzip_error = |source| NrrdError::Gzip {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = MultiGzDecoder::new(after_header);
    let skip = h.byte_skip.unwrap_or(0) as u64;
    std::io::copy(&mut (&mut decoder).take(skip), &mut std::io::sink()).map_err(gzip_error)?;
    // 256 KiB: stays in L2 while it is scanned.
    let chunk = row_bytes * (256 * 1024 / row_bytes.max(1)).max(1);
    let mut buf = vec![0u8; chunk];
    let (mut done, mut filled, mut index) = (0usize, 0usize, 0usize);
    while done < total {
        let want = chunk.min(total - done + filled);
        let n = decoder.read(&mut buf[filled..want]).map_err(gzip_error)?;
        if n == 0 {
            return Err(NrrdError::Truncated {
                path: path.to_path_buf(),
                expected: total,
                found: done + filled,
            });
        }
        filled += n;
        let whole = filled - filled % row_bytes;
        for r in buf[..whole].chunks_exact(row_bytes) {
            row(index, r);
            index += 1;
        }
        buf.copy_within(whole..filled, 0);
        done += whole;
        filled -= whole;
    }
    // One more read reaches the end of the member, where the decoder checks
    // the gzip trailer (CRC-32 and length, RFC 1952 §2.3.1): a damaged mask
    // is an error here, as it is for the whole-buffer inflate.
    decoder.read(&mut [0u8; 64]).map_err(gzip_error)?;
    Ok(())
}

/// Bounding box (x, y, z ranges) of the voxels where `inside(linear index)`,
/// scanning slices in parallel.
fn bbox_where(
    dims: [usize; 3],
    inside: impl Fn(usize) -> bool + Sync,
) -> Option<[Range<usize>; 3]> {
    let nx = dims[0];
    bbox_of_rows(dims, |row| {
        let start = row * nx;
        let first = (0..nx).find(|&x| inside(start + x))?;
        let last = (first..nx).rev().find(|&x| inside(start + x))?;
        Some((first, last))
    })
}

/// Bounding box from `row_extent(row index)`: the first and last x of the
/// row that are inside, or `None` for a row with nothing inside.
fn bbox_of_rows(
    dims: [usize; 3],
    row_extent: impl Fn(usize) -> Option<(usize, usize)> + Sync,
) -> Option<[Range<usize>; 3]> {
    use rayon::prelude::*;
    let [_, ny, nz] = dims;
    (0..nz)
        .into_par_iter()
        .filter_map(|z| {
            let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
            for y in 0..ny {
                let Some((first, last)) = row_extent(z * ny + y) else {
                    continue;
                };
                x0 = x0.min(first);
                x1 = x1.max(last);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
            (x0 != usize::MAX).then_some([x0, x1, y0, y1, z, z])
        })
        .reduce_with(|a, b| {
            [
                a[0].min(b[0]),
                a[1].max(b[1]),
                a[2].min(b[2]),
                a[3].max(b[3]),
                a[4].min(b[4]),
                a[5].max(b[5]),
            ]
        })
        .map(|b| [b[0]..b[1] + 1, b[2]..b[3] + 1, b[4]..b[5] + 1])
}

/// Reads only the header of an NRRD file.
pub fn read_nrrd_header(path: &Path) -> Result<NrrdHeader, NrrdError> {
    let file = File::open(path).map_err(|source| NrrdError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Headers are small; 64 KiB is far more than any real one.
    let mut head = Vec::with_capacity(4096);
    let mut reader = BufReader::new(file).take(64 * 1024);
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| NrrdError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        head.extend_from_slice(&line);
        if n == 0 || line == b"\n" || line == b"\r\n" {
            break;
        }
    }
    parse_header(path, &head)
}

fn read_file(path: &Path) -> Result<Vec<u8>, NrrdError> {
    pages::read_file(path).map_err(|source| NrrdError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn full_region(h: &NrrdHeader) -> [Range<usize>; 3] {
    [0..h.dims[0], 0..h.dims[1], 0..h.dims[2]]
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<NrrdHeader, NrrdError> {
    let p = || path.to_path_buf();
    let bad_line = |line: usize, reason: &str| NrrdError::BadHeaderLine {
        path: path.to_path_buf(),
        line,
        reason: reason.to_string(),
    };

    let mut pos = 0usize;
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut data_offset = None;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i);
        let raw = &bytes[pos..end];
        pos = (end + 1).min(bytes.len());
        line_no += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            data_offset = Some(pos);
            break;
        }
        let text = std::str::from_utf8(raw).map_err(|_| {
            if line_no == 1 {
                NrrdError::NotNrrd { path: p() }
            } else {
                bad_line(
                    line_no,
                    "not valid UTF-8 (is the blank line before the data missing?)",
                )
            }
        })?;
        lines.push((line_no, text.to_string()));
        if lines.len() > 4096 {
            return Err(bad_line(line_no, "header too long"));
        }
    }

    let Some((_, magic)) = lines.first() else {
        return Err(NrrdError::NotNrrd { path: p() });
    };
    let Some(version) = magic.strip_prefix("NRRD") else {
        return Err(NrrdError::NotNrrd { path: p() });
    };
    if !matches!(version, "0001" | "0002" | "0003" | "0004" | "0005") {
        return Err(NrrdError::UnsupportedVersion {
            path: p(),
            version: version.to_string(),
        });
    }
    let data_offset = data_offset.ok_or_else(|| {
        bad_line(
            line_no,
            "the header does not end with a blank line (no data follows)",
        )
    })?;

    let mut fields: Vec<(&'static str, String)> = Vec::new();
    for (no, line) in lines.iter().skip(1) {
        if line.starts_with('#') {
            continue;
        }
        // Key/value pairs (`key:=value`) carry free-form metadata; skip them.
        if let Some(i) = line.find(":=")
            && !line[..i].contains(": ")
        {
            continue;
        }
        let Some((key, value)) = line.split_once(": ") else {
            return Err(bad_line(*no, "expected `field: value`"));
        };
        let key = key.trim().to_ascii_lowercase();
        let canonical = match key.as_str() {
            "type" => "type",
            "dimension" => "dimension",
            "sizes" => "sizes",
            "encoding" => "encoding",
            "endian" => "endian",
            "space" => "space",
            "space dimension" => "space dimension",
            "space directions" => "space directions",
            "space origin" => "space origin",
            "spacings" => "spacings",
            "line skip" | "lineskip" => "line skip",
            "byte skip" | "byteskip" => "byte skip",
            "data file" | "datafile" => "data file",
            // kinds, units, labels, centerings, measurement frame, content, …:
            // informative only for a scalar volume.
            _ => continue,
        };
        fields.push((canonical, value.trim().to_string()));
    }
    let get = |name: &'static str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    };
    let require = |name: &'static str| {
        get(name).ok_or(NrrdError::MissingField {
            path: p(),
            field: name,
        })
    };
    let bad_field = |field: &'static str, value: &str, reason: &str| NrrdError::BadField {
        path: p(),
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    };

    if let Some(file) = get("data file") {
        return Err(NrrdError::DetachedData {
            path: p(),
            data_file: file.to_string(),
        });
    }

    let type_str = require("type")?;
    let sample_type = SampleType::parse(type_str).ok_or_else(|| NrrdError::UnsupportedType {
        path: p(),
        kind: type_str.to_string(),
    })?;

    let dim_str = require("dimension")?;
    let dimension: usize = dim_str
        .parse()
        .map_err(|_| bad_field("dimension", dim_str, "not a positive integer"))?;
    if dimension != 3 {
        return Err(NrrdError::UnsupportedDimension {
            path: p(),
            dimension,
        });
    }

    let sizes_str = require("sizes")?;
    let sizes: Vec<usize> = sizes_str
        .split_whitespace()
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad_field("sizes", sizes_str, "not a list of integers"))?;
    if sizes.len() != 3 || sizes.contains(&0) {
        return Err(bad_field(
            "sizes",
            sizes_str,
            "expected three positive sizes",
        ));
    }
    let dims = [sizes[0], sizes[1], sizes[2]];
    if dims
        .iter()
        .try_fold(sample_type.size(), |acc, &d| acc.checked_mul(d))
        .is_none_or(|n| n > isize::MAX as usize)
    {
        return Err(bad_field("sizes", sizes_str, "volume too large"));
    }

    let enc_str = require("encoding")?;
    let encoding = match enc_str.to_ascii_lowercase().as_str() {
        "raw" => Encoding::Raw,
        "gzip" | "gz" => Encoding::Gzip,
        "ascii" | "text" | "txt" => Encoding::Ascii,
        _ => {
            return Err(NrrdError::UnsupportedEncoding {
                path: p(),
                encoding: enc_str.to_string(),
            });
        }
    };

    let big_endian = match get("endian") {
        Some("little") => false,
        Some("big") => true,
        Some(other) => return Err(bad_field("endian", other, "expected little or big")),
        None if sample_type.size() > 1 && encoding != Encoding::Ascii => {
            return Err(NrrdError::MissingField {
                path: p(),
                field: "endian",
            });
        }
        None => false,
    };

    // `space`: LPS is what Volume stores; RAS differs by the sign of x and y.
    let ras = match get("space").map(|s| s.to_ascii_lowercase()) {
        None => false,
        Some(s) => match s.as_str() {
            "left-posterior-superior" | "lps" => false,
            "right-anterior-superior" | "ras" => true,
            _ => {
                return Err(bad_field(
                    "space",
                    get("space").unwrap_or_default(),
                    "only LPS and RAS patient spaces are supported",
                ));
            }
        },
    };
    if let Some(sd) = get("space dimension")
        && sd != "3"
    {
        return Err(bad_field("space dimension", sd, "only 3 is supported"));
    }

    let mut spacing = [1.0f64; 3];
    let mut direction = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    if let Some(sd) = get("space directions") {
        let vectors = parse_vectors(sd)
            .ok_or_else(|| bad_field("space directions", sd, "expected three (x,y,z) vectors"))?;
        if vectors.len() != 3 {
            return Err(bad_field(
                "space directions",
                sd,
                "expected one vector per axis (3)",
            ));
        }
        for (i, v) in vectors.iter().enumerate() {
            let Some(v) = v else {
                return Err(bad_field(
                    "space directions",
                    sd,
                    "`none` is not allowed for a spatial axis",
                ));
            };
            let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if !(norm.is_finite() && norm > 0.0) {
                return Err(bad_field(
                    "space directions",
                    sd,
                    "a direction vector has zero or non-finite length",
                ));
            }
            spacing[i] = norm;
            for r in 0..3 {
                direction[r][i] = v[r] / norm;
            }
        }
    } else if let Some(sp) = get("spacings") {
        let values: Vec<f64> = sp
            .split_whitespace()
            .map(|s| s.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad_field("spacings", sp, "not a list of numbers"))?;
        if values.len() != 3 || values.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(bad_field(
                "spacings",
                sp,
                "expected three positive spacings",
            ));
        }
        spacing = [values[0], values[1], values[2]];
    }

    let mut origin = [0.0f64; 3];
    if let Some(so) = get("space origin") {
        let v = parse_vectors(so)
            .filter(|v| v.len() == 1)
            .and_then(|v| v[0])
            .ok_or_else(|| bad_field("space origin", so, "expected one (x,y,z) vector"))?;
        origin = v;
    }
    if ras {
        for row in direction.iter_mut().take(2) {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
        origin[0] = -origin[0];
        origin[1] = -origin[1];
    }

    let line_skip = match get("line skip") {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| bad_field("line skip", s, "not a non-negative integer"))?,
    };
    let byte_skip = match get("byte skip") {
        None => Some(0),
        Some("-1") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| bad_field("byte skip", s, "not an integer >= -1"))?,
        ),
    };
    if byte_skip.is_none() && encoding != Encoding::Raw {
        return Err(bad_field(
            "byte skip",
            "-1",
            "-1 is only allowed with raw encoding",
        ));
    }

    Ok(NrrdHeader {
        sample_type,
        dims,
        spacing,
        origin,
        direction,
        big_endian,
        encoding,
        line_skip,
        byte_skip,
        data_offset,
    })
}

/// Parses `(a,b,c) (d,e,f) none …`; `none` becomes `None`.
fn parse_vectors(s: &str) -> Option<Vec<Option<[f64; 3]>>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("none") {
            out.push(None);
            rest = r.trim_start();
            continue;
        }
        let r = rest.strip_prefix('(')?;
        let close = r.find(')')?;
        let parts: Vec<f64> = r[..close]
            .split(',')
            .map(|t| t.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .ok()?;
        if parts.len() != 3 || parts.iter().any(|v| !v.is_finite()) {
            return None;
        }
        out.push(Some([parts[0], parts[1], parts[2]]));
        rest = r[close + 1..].trim_start();
    }
    Some(out)
}

/// Skips `n` lines of `data`, returning the rest.
fn skip_lines(data: &[u8], n: usize) -> &[u8] {
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => rest = &rest[i + 1..],
            None => return &[],
        }
    }
    rest
}

/// Decodes the samples of `region` and maps each through `map` (from f64).
fn decode<T: Copy + Default + Send>(
    path: &Path,
    bytes: &[u8],
    h: &NrrdHeader,
    region: [Range<usize>; 3],
    map: impl Fn(f64) -> T + Sync,
) -> Result<Volume<T>, NrrdError> {
    if h.encoding == Encoding::Ascii {
        return decode_ascii(path, bytes, h, region, map);
    }
    let needed = region[2].end * h.dims[0] * h.dims[1] * h.sample_type.size();
    let data: std::borrow::Cow<'_, [u8]> = match h.encoding {
        Encoding::Raw => std::borrow::Cow::Borrowed(raw_samples(path, bytes, h)?),
        _ => std::borrow::Cow::Owned(gunzip(path, bytes, h, needed)?),
    };
    Ok(convert_region(h, &*data, region, map))
}

/// The raw sample bytes of an uncompressed file (all of them, checked).
fn raw_samples<'a>(path: &Path, bytes: &'a [u8], h: &NrrdHeader) -> Result<&'a [u8], NrrdError> {
    let after_header = skip_lines(&bytes[h.data_offset..], h.line_skip);
    let total = h.voxel_count() * h.sample_type.size();
    let start = match h.byte_skip {
        Some(skip) => skip.min(after_header.len()),
        None => after_header.len().saturating_sub(total),
    };
    let d = &after_header[start..];
    if d.len() < total {
        return Err(NrrdError::Truncated {
            path: path.to_path_buf(),
            expected: total,
            found: d.len(),
        });
    }
    Ok(&d[..total])
}

/// Decompresses the gzip payload until `needed` sample bytes are out (the
/// rest of the stream is never inflated). Returns the sample bytes (after
/// `byte skip`).
fn gunzip(path: &Path, bytes: &[u8], h: &NrrdHeader, needed: usize) -> Result<Vec<u8>, NrrdError> {
    let after_header = skip_lines(&bytes[h.data_offset..], h.line_skip);
    let skip = h.byte_skip.unwrap_or(0);
    let total = h.voxel_count() * h.sample_type.size();
    // Fast path: libdeflate, ~2× flate2's speed here, into a buffer just big
    // enough for the prefix (see `inflate::PREFIX_SLACK`). Anything else
    // (several gzip members, corrupt or short data) goes through flate2's
    // streaming decoder, which also names the error.
    let want = skip + needed;
    let room = want
        + if needed < total {
            inflate::PREFIX_SLACK
        } else {
            0
        };
    let mut out = pages::zeroed::<u8>(room.min(skip + total));
    let got = match libdeflater::Decompressor::new().gzip_decompress(after_header, &mut out) {
        Ok(n) => n == skip + total,
        Err(libdeflater::DecompressionError::InsufficientSpace) => out.len() < skip + total,
        Err(_) => false,
    };
    if got {
        out.truncate(want);
        out.drain(..skip);
        return Ok(out);
    }
    let mut decoder = MultiGzDecoder::new(after_header);
    let mut buf = vec![0u8; want];
    let mut filled = 0usize;
    while filled < want {
        let n = decoder
            .read(&mut buf[filled..])
            .map_err(|source| NrrdError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            return Err(NrrdError::Truncated {
                path: path.to_path_buf(),
                expected: total,
                found: filled.saturating_sub(skip),
            });
        }
        filled += n;
    }
    buf.drain(..skip);
    Ok(buf)
}

/// Reads the region of an image that another computation decides — typically
/// the bounding box of a mask. The image file is mapped
/// ([`pages::map_file`]) on a second thread while `region_of` runs on this
/// one; then only the gzip stream up to the region's
/// last slice is inflated and only the region's samples are converted.
///
/// Measured on the whole chest CTs of the radiomics benchmark (512² × 48/61,
/// ROI ending at slice 34/25): the CT's inflate is most of an end-to-end
/// extraction, so this ordering (small mask first, then a prefix of the big
/// image) beats inflating the whole image concurrently with the mask.
pub fn read_nrrd_f32_cropped<E: From<NrrdError>>(
    path: &Path,
    region_of: impl FnOnce(&NrrdHeader) -> Result<[Range<usize>; 3], E>,
) -> Result<Volume<f32>, E> {
    let h = read_nrrd_header(path)?;
    let (bytes, region) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            pages::map_file(path).map_err(|source| NrrdError::Io {
                path: path.to_path_buf(),
                source,
            })
        });
        let region = region_of(&h);
        let bytes = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (bytes, region)
    });
    let region = region?;
    let bytes = bytes?;
    let region = check_region(path, region, h.dims)?;
    // The header of the whole file (same bytes as the one read above, but
    // parsed from the buffer so that offsets refer to it).
    let h = parse_header(path, &bytes)?;
    let mut bytes = bytes;
    if let Some(data) = gunzip_two_cores(&mut bytes, &h, &region) {
        return Ok(convert_region(&h, &data, region, |v| v as f32));
    }
    Ok(decode(path, &bytes, &h, region, |v| v as f32)?)
}

/// Below this many bytes a prefix inflates serially: the split costs a
/// block search, a thread and a marker pass (≈ 1–2 ms).
const TWO_CORE_MIN_BYTES: usize = 4 << 20;

/// The samples of `region`'s slices inflated on two cores
/// (`inflate::inflate_range`: the prefix up to the last slice, or only a
/// window around the slices when that is cheaper), or `None` where that
/// does not apply (not gzip, a small prefix, one CPU) or does not work out;
/// the caller then decodes serially, which also reports corrupt data.
fn gunzip_two_cores(
    bytes: &mut [u8],
    h: &NrrdHeader,
    region: &[Range<usize>; 3],
) -> Option<SkippedInflated> {
    if h.encoding != Encoding::Gzip {
        return None;
    }
    let skip = h.byte_skip.unwrap_or(0);
    let size = h.sample_type.size();
    let needed = region[2].end * h.dims[0] * h.dims[1] * size;
    let total = h.voxel_count() * size;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if needed < TWO_CORE_MIN_BYTES || cpus < 2 || rayon::current_num_threads() < 2 {
        return None;
    }
    let offset = bytes.len() - skip_lines(&bytes[h.data_offset..], h.line_skip).len();
    let from = region[2].start * h.dims[0] * h.dims[1] * size;
    let prefix = inflate::inflate_range(
        &mut bytes[offset..],
        skip + from,
        skip + needed,
        skip + total,
    )?;
    Some(SkippedInflated { prefix, skip })
}

/// Sample bytes of a volume from its first slice on, as [`fill`] reads them
/// row by row: one buffer, or an inflated prefix in two pieces.
trait SampleBytes: Sync {
    fn bytes(&self, start: usize, len: usize) -> std::borrow::Cow<'_, [u8]>;
}

impl SampleBytes for [u8] {
    fn bytes(&self, start: usize, len: usize) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self[start..start + len])
    }
}

/// A two-core prefix or window after the header's `byte skip`.
struct SkippedInflated {
    prefix: inflate::Inflated,
    skip: usize,
}

impl SampleBytes for SkippedInflated {
    fn bytes(&self, start: usize, len: usize) -> std::borrow::Cow<'_, [u8]> {
        self.prefix.get(self.skip + start, len)
    }
}

/// Converts the samples of `region` (`data` starts at the first slice of the
/// volume) with one monomorphised loop per sample type and byte order.
fn convert_region<T: Copy + Default + Send>(
    h: &NrrdHeader,
    data: &(impl SampleBytes + ?Sized),
    region: [Range<usize>; 3],
    map: impl Fn(f64) -> T + Sync,
) -> Volume<T> {
    macro_rules! go {
        ($ty:ty) => {{
            const N: usize = std::mem::size_of::<$ty>();
            if h.big_endian {
                fill::<T, N>(h, data, &region, |b| <$ty>::from_be_bytes(b) as f64, &map)
            } else {
                fill::<T, N>(h, data, &region, |b| <$ty>::from_le_bytes(b) as f64, &map)
            }
        }};
    }
    let out = match h.sample_type {
        SampleType::I8 => go!(i8),
        SampleType::U8 => go!(u8),
        SampleType::I16 => go!(i16),
        SampleType::U16 => go!(u16),
        SampleType::I32 => go!(i32),
        SampleType::U32 => go!(u32),
        SampleType::I64 => go!(i64),
        SampleType::U64 => go!(u64),
        SampleType::F32 => go!(f32),
        SampleType::F64 => go!(f64),
    };
    let dims = [region[0].len(), region[1].len(), region[2].len()];
    region_volume(h, region, dims, out)
}

fn fill<T: Copy + Default + Send, const N: usize>(
    h: &NrrdHeader,
    data: &(impl SampleBytes + ?Sized),
    region: &[Range<usize>; 3],
    read: impl Fn([u8; N]) -> f64 + Sync,
    map: &(impl Fn(f64) -> T + Sync),
) -> Vec<T> {
    use rayon::prelude::*;
    let [nx, ny, _] = h.dims;
    let row_len = region[0].len();
    let rows = region[1].len();
    let mut out = vec![T::default(); row_len * rows * region[2].len()];
    // One output slice per task: conversion is memory-bound and splits
    // cleanly by slice.
    out.par_chunks_mut(row_len * rows)
        .enumerate()
        .for_each(|(zi, slice)| {
            let z = region[2].start + zi;
            for (yi, row) in slice.chunks_mut(row_len).enumerate() {
                let y = region[1].start + yi;
                let start = ((z * ny + y) * nx + region[0].start) * N;
                let src = data.bytes(start, row_len * N);
                for (o, b) in row.iter_mut().zip(src.chunks_exact(N)) {
                    let mut a = [0u8; N];
                    a.copy_from_slice(b);
                    *o = map(read(a));
                }
            }
        });
    out
}

fn decode_ascii<T: Copy + Default>(
    path: &Path,
    bytes: &[u8],
    h: &NrrdHeader,
    region: [Range<usize>; 3],
    map: impl Fn(f64) -> T,
) -> Result<Volume<T>, NrrdError> {
    let [nx, ny, _] = h.dims;
    let plane = nx * ny;
    let after_header = skip_lines(&bytes[h.data_offset..], h.line_skip);
    let text = std::str::from_utf8(after_header).map_err(|_| NrrdError::BadAscii {
        path: path.to_path_buf(),
        index: 0,
        token: "<non-UTF-8 data>".into(),
    })?;
    let mut tokens = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty());
    let out_dims = [region[0].len(), region[1].len(), region[2].len()];
    let mut out = Vec::with_capacity(out_dims[0] * out_dims[1] * out_dims[2]);
    for idx in 0..region[2].end * plane {
        let tok = tokens.next().ok_or(NrrdError::Truncated {
            path: path.to_path_buf(),
            expected: h.voxel_count(),
            found: idx,
        })?;
        let v: f64 = tok.parse().map_err(|_| NrrdError::BadAscii {
            path: path.to_path_buf(),
            index: idx,
            token: tok.to_string(),
        })?;
        let (z, y, x) = (idx / plane, (idx % plane) / nx, idx % nx);
        if region[2].contains(&z) && region[1].contains(&y) && region[0].contains(&x) {
            out.push(map(v));
        }
    }
    Ok(region_volume(h, region, out_dims, out))
}

fn region_volume<T: Copy>(
    h: &NrrdHeader,
    region: [Range<usize>; 3],
    dims: [usize; 3],
    data: Vec<T>,
) -> Volume<T> {
    let full = Volume {
        data: Vec::<T>::new(),
        dims: h.dims,
        spacing: h.spacing,
        origin: h.origin,
        direction: h.direction,
    };
    let origin = full.index_to_physical([
        region[0].start as f64,
        region[1].start as f64,
        region[2].start as f64,
    ]);
    Volume {
        data,
        dims,
        spacing: h.spacing,
        origin,
        direction: h.direction,
    }
}

/// A sample type the writer can store.
pub trait NrrdSample: Copy {
    const TYPE: SampleType;
    fn write_le(self, out: &mut Vec<u8>);
}

impl NrrdSample for f32 {
    const TYPE: SampleType = SampleType::F32;
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NrrdSample for u8 {
    const TYPE: SampleType = SampleType::U8;
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NrrdSample for i16 {
    const TYPE: SampleType = SampleType::I16;
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Writes `volume` as an NRRD0004 file in LPS, little-endian, gzip or raw.
pub fn write_nrrd<T: NrrdSample>(
    path: &Path,
    volume: &Volume<T>,
    gzip: bool,
) -> Result<(), NrrdError> {
    let werr = |source| NrrdError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut header = String::from("NRRD0004\n# written by oncohooks\n");
    header.push_str(&format!("type: {}\ndimension: 3\n", T::TYPE.name()));
    header.push_str("space: left-posterior-superior\n");
    header.push_str(&format!(
        "sizes: {} {} {}\n",
        volume.dims[0], volume.dims[1], volume.dims[2]
    ));
    let dirs: Vec<String> = (0..3)
        .map(|i| {
            let s = volume.spacing[i];
            let d = &volume.direction;
            format!(
                "({},{},{})",
                fmt_f64(d[0][i] * s),
                fmt_f64(d[1][i] * s),
                fmt_f64(d[2][i] * s)
            )
        })
        .collect();
    header.push_str(&format!("space directions: {}\n", dirs.join(" ")));
    header.push_str("kinds: domain domain domain\nendian: little\n");
    header.push_str(&format!(
        "encoding: {}\n",
        if gzip { "gzip" } else { "raw" }
    ));
    header.push_str(&format!(
        "space origin: ({},{},{})\n\n",
        fmt_f64(volume.origin[0]),
        fmt_f64(volume.origin[1]),
        fmt_f64(volume.origin[2])
    ));
    let mut raw = Vec::with_capacity(volume.data.len() * T::TYPE.size());
    for &v in &volume.data {
        v.write_le(&mut raw);
    }
    let mut file = File::create(path).map_err(werr)?;
    file.write_all(header.as_bytes()).map_err(werr)?;
    if gzip {
        let mut enc = GzEncoder::new(file, Compression::fast());
        enc.write_all(&raw).map_err(werr)?;
        enc.finish().map_err(werr)?;
    } else {
        file.write_all(&raw).map_err(werr)?;
    }
    Ok(())
}

/// Shortest text that parses back to the same f64.
fn fmt_f64(v: f64) -> String {
    format!("{v:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        (dir, p)
    }

    fn header_text(extra: &str) -> String {
        format!(
            "NRRD0005\n# comment\ntype: short\ndimension: 3\nspace: left-posterior-superior\n\
             sizes: 3 2 2\nspace directions: (0.5,0,0) (0,0.75,0) (0,0,2.5)\nkinds: domain domain domain\n\
             endian: little\nspace origin: (-10,20.5,-30)\n{extra}"
        )
    }

    fn sample_values() -> Vec<i16> {
        (0..12).map(|i| (i as i16) * 100 - 600).collect()
    }

    #[test]
    fn reads_raw_short_with_geometry() {
        let (_d, path) = tmp("a.nrrd");
        let mut bytes = header_text("encoding: raw\n\n").into_bytes();
        for v in sample_values() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        let v = read_nrrd_f32(&path).unwrap();
        assert_eq!(v.dims, [3, 2, 2]);
        assert_eq!(v.spacing, [0.5, 0.75, 2.5]);
        assert_eq!(v.origin, [-10.0, 20.5, -30.0]);
        assert_eq!(v.get(2, 1, 1), 500.0);
        assert_eq!(v.get(0, 0, 0), -600.0);
    }

    #[test]
    fn reads_big_endian_gzip_and_region() {
        let (_d, path) = tmp("b.nrrd");
        let text = header_text("encoding: gzip\n\n").replace("endian: little", "endian: big");
        let mut raw = Vec::new();
        for v in sample_values() {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&raw).unwrap();
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(&enc.finish().unwrap());
        std::fs::write(&path, bytes).unwrap();
        let full = read_nrrd_f32(&path).unwrap();
        assert_eq!(full.get(1, 1, 0), -200.0);
        let part = read_nrrd_f32_region(&path, [1..3, 1..2, 1..2]).unwrap();
        assert_eq!(part.dims, [2, 1, 1]);
        assert_eq!(part.data, vec![full.get(1, 1, 1), full.get(2, 1, 1)]);
        assert_eq!(part.origin, full.index_to_physical([1.0, 1.0, 1.0]));
    }

    /// The prefix inflate (`gunzip` with fewer bytes than the volume) must
    /// give exactly the bytes of a full inflate, whatever the prefix length:
    /// across stored blocks (noise), long matches (flat runs) and Huffman
    /// blocks (gradients), for many cut points. This guards inflate::PREFIX_SLACK's
    /// reading of libdeflate.
    #[test]
    fn prefix_inflate_is_exact() {
        let (nx, ny, nz) = (64usize, 64usize, 40usize);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut raw = Vec::with_capacity(nx * ny * nz * 2);
        for z in 0..nz {
            for i in 0..nx * ny {
                let v: i16 = match z % 3 {
                    0 => {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        (state >> 48) as i16
                    }
                    1 => -1000,
                    _ => ((i % nx) as i16) * 7 - 300 + (z as i16),
                };
                raw.extend_from_slice(&v.to_le_bytes());
            }
        }
        for level in [
            Compression::fast(),
            Compression::default(),
            Compression::best(),
        ] {
            let text = format!(
                "NRRD0004\ntype: short\ndimension: 3\nsizes: {nx} {ny} {nz}\n\
                 endian: little\nencoding: gzip\n\n"
            );
            let mut enc = GzEncoder::new(Vec::new(), level);
            enc.write_all(&raw).unwrap();
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(&enc.finish().unwrap());
            let path = Path::new("prefix.nrrd");
            let h = parse_header(path, &bytes).unwrap();
            let full = gunzip(path, &bytes, &h, raw.len()).unwrap();
            assert_eq!(full, raw);
            for needed in (1..raw.len())
                .step_by(4_099)
                .chain([raw.len() - 1, 65_535, 65_536])
            {
                let part = gunzip(path, &bytes, &h, needed).unwrap();
                assert!(part == raw[..needed], "prefix of {needed} bytes differs");
            }
        }
    }

    #[test]
    fn ras_space_is_converted_to_lps() {
        let (_d, path) = tmp("c.nrrd");
        let text = header_text("encoding: raw\n\n")
            .replace("left-posterior-superior", "right-anterior-superior");
        let mut bytes = text.into_bytes();
        for v in sample_values() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, bytes).unwrap();
        let v = read_nrrd_f32(&path).unwrap();
        assert_eq!(v.origin, [10.0, -20.5, -30.0]);
        assert_eq!(v.direction[0][0], -1.0);
        assert_eq!(v.direction[1][1], -1.0);
        assert_eq!(v.direction[2][2], 1.0);
        assert_eq!(v.spacing, [0.5, 0.75, 2.5]);
    }

    #[test]
    fn mask_reader_keeps_one_label() {
        let (_d, path) = tmp("m.nrrd");
        let mut vol = Volume::new(vec![0u8, 1, 2, 1, 0, 2, 2, 1], [2, 2, 2], [1.0, 1.0, 1.0]);
        vol.origin = [1.0, 2.0, 3.0];
        write_nrrd(&path, &vol, true).unwrap();
        let m = read_nrrd_mask(&path, 2).unwrap();
        assert_eq!(m.data, vec![0, 0, 1, 0, 0, 1, 1, 0]);
        assert_eq!(m.origin, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn writer_round_trips_float_with_direction() {
        let (_d, path) = tmp("f.nrrd");
        let mut vol = Volume::new(
            (0..24).map(|i| i as f32 * 0.25 - 3.0).collect(),
            [2, 3, 4],
            [0.7, 0.8, 3.0],
        );
        vol.origin = [-1.5, 2.25, 100.125];
        vol.direction = [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        for gzip in [false, true] {
            write_nrrd(&path, &vol, gzip).unwrap();
            let back = read_nrrd_f32(&path).unwrap();
            assert_eq!(back.data, vol.data);
            assert_eq!(back.dims, vol.dims);
            assert_eq!(back.origin, vol.origin);
            for r in 0..3 {
                for c in 0..3 {
                    assert!((back.direction[r][c] - vol.direction[r][c]).abs() < 1e-15);
                }
                assert!((back.spacing[r] - vol.spacing[r]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn ascii_encoding_is_read() {
        let (_d, path) = tmp("t.nrrd");
        let text = header_text("encoding: ascii\n\n") + "1 2 3 4 5 6\n7 8 9 10 11 12\n";
        std::fs::write(&path, text).unwrap();
        let v = read_nrrd_f32(&path).unwrap();
        assert_eq!(v.data[11], 12.0);
    }

    #[test]
    fn truncated_raw_data_is_reported() {
        let (_d, path) = tmp("t.nrrd");
        let mut bytes = header_text("encoding: raw\n\n").into_bytes();
        bytes.extend_from_slice(&[0u8; 10]);
        std::fs::write(&path, bytes).unwrap();
        let err = read_nrrd_f32(&path).unwrap_err();
        assert!(
            matches!(
                err,
                NrrdError::Truncated {
                    expected: 24,
                    found: 10,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_gzip_data_is_reported() {
        let (_d, path) = tmp("t.nrrd");
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&[0u8; 24]).unwrap();
        let gz = enc.finish().unwrap();
        let mut bytes = header_text("encoding: gzip\n\n").into_bytes();
        bytes.extend_from_slice(&gz[..gz.len() / 2]);
        std::fs::write(&path, bytes).unwrap();
        let err = read_nrrd_f32(&path).unwrap_err();
        assert!(
            matches!(err, NrrdError::Gzip { .. } | NrrdError::Truncated { .. }),
            "{err}"
        );
    }

    #[test]
    fn bad_headers_are_rejected_with_the_field_named() {
        let (_d, path) = tmp("h.nrrd");
        let cases: Vec<(String, &str)> = vec![
            ("P5\n3 2\n255\n".into(), "not an NRRD file"),
            ("NRRD0009\ntype: short\n\n".into(), "version"),
            (header_text("encoding: bzip2\n\n"), "bzip2"),
            (header_text("\n").replace("type: short\n", ""), "`type`"),
            (
                header_text("encoding: raw\n\n").replace("short", "quaternion"),
                "quaternion",
            ),
            (
                header_text("encoding: raw\n\n").replace("dimension: 3", "dimension: 4"),
                "dimension 4",
            ),
            (
                header_text("encoding: raw\n\n").replace("sizes: 3 2 2", "sizes: 3 x 2"),
                "sizes",
            ),
            (
                header_text("encoding: raw\ndata file: a.raw\n\n"),
                "detached",
            ),
            (
                header_text("encoding: raw\n\n").replace("(0,0,2.5)", "(0,0,0)"),
                "space directions",
            ),
            (
                header_text("encoding: raw\n\n").replace("endian: little\n", ""),
                "`endian`",
            ),
            (
                header_text("encoding: raw\n\n").replace("left-posterior-superior", "scanner-xyz"),
                "space",
            ),
            (header_text("encoding: raw\n"), "blank line"),
        ];
        for (text, needle) in cases {
            std::fs::write(&path, text.as_bytes()).unwrap();
            let err = read_nrrd_f32(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let err = read_nrrd_f32(Path::new("/nonexistent/x.nrrd")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.nrrd"));
    }

    #[test]
    fn cropped_read_overlaps_with_the_region_computation() {
        let (_d, path) = tmp("c.nrrd");
        let vol = Volume::new(
            (0..4 * 3 * 5).map(|i| i as f32).collect(),
            [4, 3, 5],
            [1.0; 3],
        );
        write_nrrd(&path, &vol, true).unwrap();
        let part = read_nrrd_f32_cropped(&path, |h| {
            assert_eq!(h.dims, [4, 3, 5]);
            Ok::<_, NrrdError>([1..3, 0..2, 2..4])
        })
        .unwrap();
        assert_eq!(part.dims, [2, 2, 2]);
        assert_eq!(
            part.data,
            vec![25.0, 26.0, 29.0, 30.0, 37.0, 38.0, 41.0, 42.0]
        );
        // An error from the region computation is returned as is.
        let err = read_nrrd_f32_cropped(&path, |_| {
            Err::<[Range<usize>; 3], _>(NrrdError::NotNrrd {
                path: "mask".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, NrrdError::NotNrrd { .. }));
        // A region outside the volume is refused.
        assert!(matches!(
            read_nrrd_f32_cropped(&path, |_| Ok::<_, NrrdError>([0..4, 0..3, 4..6])),
            Err(NrrdError::BadRegion { .. })
        ));
    }

    #[test]
    fn cropped_mask_is_the_labels_bounding_box() {
        let (_d, path) = tmp("m.nrrd");
        let mut vol = Volume::new(vec![0i16; 5 * 4 * 3], [5, 4, 3], [0.5, 0.5, 2.0]);
        vol.origin = [10.0, 20.0, 30.0];
        for (x, y, z, l) in [(1, 1, 1, 2), (3, 2, 1, 2), (2, 3, 2, 2), (4, 0, 0, 1)] {
            let i = vol.index(x, y, z);
            vol.data[i] = l;
        }
        for gzip in [false, true] {
            write_nrrd(&path, &vol, gzip).unwrap();
            let c = read_nrrd_mask_cropped(&path, 2).unwrap().unwrap();
            assert_eq!(c.region, [1..4, 1..4, 1..3]);
            assert_eq!(c.mask.dims, [3, 3, 2]);
            assert_eq!(c.mask.data.iter().filter(|&&m| m == 1).count(), 3);
            assert_eq!(c.mask.get(0, 0, 0), 1);
            assert_eq!(c.mask.get(2, 1, 0), 1);
            assert_eq!(c.mask.origin, [10.5, 20.5, 32.0]);
            assert_eq!(c.header.dims, [5, 4, 3]);
            assert!(read_nrrd_mask_cropped(&path, 7).unwrap().is_none());
        }
        let (_d2, text) = tmp("t.nrrd");
        let header = "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 1\nencoding: ascii\n\n";
        std::fs::write(&text, format!("{header}0 3 3 0\n")).unwrap();
        let c = read_nrrd_mask_cropped(&text, 3).unwrap().unwrap();
        assert_eq!(c.region, [0..2, 0..2, 0..1]);
        assert_eq!(c.mask.data, vec![0, 1, 1, 0]);
    }

    /// The streamed mask scan (several 256 KiB chunks, rows that straddle
    /// reads) gives the crop of the whole-volume reader, and a damaged
    /// gzip trailer or a cut stream is an error, not a smaller mask.
    #[test]
    fn streamed_mask_crop_equals_the_full_read_and_checks_the_stream() {
        let (_d, path) = tmp("big.nrrd");
        let [nx, ny, nz] = [300usize, 7, 400];
        let mut vol = Volume::new(vec![0i16; nx * ny * nz], [nx, ny, nz], [0.7, 0.7, 1.5]);
        for (x, y, z) in [(17, 2, 90), (299, 6, 399), (150, 0, 201), (3, 4, 120)] {
            let i = vol.index(x, y, z);
            vol.data[i] = 1;
        }
        // Another label inside the box stays 0.
        let i = vol.index(100, 3, 150);
        vol.data[i] = 2;
        write_nrrd(&path, &vol, true).unwrap();
        let c = read_nrrd_mask_cropped(&path, 1).unwrap().unwrap();
        assert_eq!(c.region, [3..300, 0..7, 90..400]);
        let full = read_nrrd_mask(&path, 1).unwrap();
        for z in 0..c.mask.dims[2] {
            for y in 0..c.mask.dims[1] {
                for x in 0..c.mask.dims[0] {
                    let want = full.get(x + 3, y, z + 90);
                    assert_eq!(c.mask.get(x, y, z), want, "({x}, {y}, {z})");
                }
            }
        }
        assert_eq!(c.mask.data.iter().filter(|&&m| m == 1).count(), 4);
        let bytes = std::fs::read(&path).unwrap();
        // The CRC-32 is the trailer's first four bytes (RFC 1952 §2.3.1).
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 8] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let err = read_nrrd_mask_cropped(&path, 1).unwrap_err();
        assert!(matches!(err, NrrdError::Gzip { .. }), "{err}");
        std::fs::write(&path, &bytes[..n - 200]).unwrap();
        let err = read_nrrd_mask_cropped(&path, 1).unwrap_err();
        assert!(
            matches!(err, NrrdError::Gzip { .. } | NrrdError::Truncated { .. }),
            "{err}"
        );
    }

    /// The zero-skipping mask decoder keeps exactly the rows (and flags)
    /// that streaming every row keeps, for 8- to 32-bit samples, with the
    /// labelled voxels at row ends and another label beside them; and it is
    /// the path taken (not the fallback).
    #[test]
    fn sparse_mask_rows_equal_the_streamed_rows() {
        let (_d, path) = tmp("sparse.nrrd");
        let [nx, ny, nz] = [64usize, 33, 40];
        let dims = [nx, ny, nz];
        let spacing = [1.0, 1.0, 2.0];
        let marks = [
            (0, 0, 0, 1),
            (63, 32, 39, 1),
            (5, 7, 20, 2),
            (6, 7, 20, 1),
            (63, 4, 9, 1),
        ];
        let check = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            let h = parse_header(path, &bytes).unwrap();
            let sparse = sparse_rows(&bytes, &h, LabelRows::new(&h, 1)).expect("sparse path taken");
            let mut streamed = LabelRows::new(&h, 1);
            stream_rows(path, &bytes, &h, |i, row| streamed.feed(i, row)).unwrap();
            assert_eq!(sparse.rows, streamed.rows);
            assert_eq!(sparse.flags, streamed.flags);
            assert_eq!(sparse.rows.len(), 4);
        };
        let mut u8s = Volume::new(vec![0u8; nx * ny * nz], dims, spacing);
        let mut i16s = Volume::new(vec![0i16; nx * ny * nz], dims, spacing);
        let mut f32s = Volume::new(vec![0f32; nx * ny * nz], dims, spacing);
        for (x, y, z, l) in marks {
            let i = u8s.index(x, y, z);
            u8s.data[i] = l as u8;
            i16s.data[i] = l as i16;
            f32s.data[i] = l as f32;
        }
        // Negative zero is a non-zero byte pattern but not the label.
        f32s.data[17] = -0.0;
        write_nrrd(&path, &u8s, true).unwrap();
        check(&path);
        write_nrrd(&path, &i16s, true).unwrap();
        check(&path);
        write_nrrd(&path, &f32s, true).unwrap();
        check(&path);
    }

    /// A CT-sized cropped read (prefix over `TWO_CORE_MIN_BYTES`, so the
    /// two-core inflate applies) gives the same samples as a full read.
    #[test]
    fn large_cropped_read_equals_the_full_read() {
        cropped_read_matches(12, 20, [100..300, 50..450, 2..11]);
    }

    /// A few slices late in a CT-sized gzip volume: the two-core inflate can
    /// decode them from a block start shortly before them without the
    /// stream before (`inflate::inflate_range`'s window method), and the
    /// samples are still those of a full read.
    #[test]
    fn late_small_region_equals_the_full_read() {
        cropped_read_matches(30, 300, [200..260, 180..230, 24..27]);
    }

    /// Writes a 512 × 512 × `nz` gzip CT (a disc of soft tissue in air, with
    /// `noise` HU steps of noise) and checks a cropped read of `region`
    /// against a full read.
    fn cropped_read_matches(nz: usize, noise: u64, region: [Range<usize>; 3]) {
        let (_d, path) = tmp("ct.nrrd");
        let [nx, ny] = [512usize, 512];
        let mut state = 5u64;
        let data: Vec<i16> = (0..nx * ny * nz)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let (x, y) = ((i % nx) as f64, ((i / nx) % ny) as f64);
                let body = (x - 256.0).hypot(y - 256.0) < 200.0;
                let base = if body {
                    40.0 + 25.0 * (x / 31.0).sin()
                } else {
                    -1000.0
                };
                (base + ((state >> 33) % noise) as f64) as i16
            })
            .collect();
        let vol = Volume::new(data, [nx, ny, nz], [0.7, 0.7, 2.5]);
        write_nrrd(&path, &vol, true).unwrap();
        let part = read_nrrd_f32_cropped(&path, |_| Ok::<_, NrrdError>(region.clone())).unwrap();
        assert_eq!(part.dims, region.clone().map(|r| r.len()));
        let [x0, y0, z0] = region.clone().map(|r| r.start);
        let last = region.clone().map(|r| r.len() - 1);
        for (z, y, x) in [(0, 0, 0), (last[2], last[1], last[0]), (1, 7, 3)] {
            let want = vol.get(x + x0, y + y0, z + z0) as f32;
            assert_eq!(part.get(x, y, z), want, "({x}, {y}, {z})");
        }
        let full = read_nrrd_f32(&path).unwrap();
        let mut k = 0;
        for z in region[2].clone() {
            for y in region[1].clone() {
                for x in region[0].clone() {
                    assert_eq!(part.data[k], full.get(x, y, z));
                    k += 1;
                }
            }
        }
    }

    #[test]
    fn region_outside_volume_is_rejected() {
        let (_d, path) = tmp("r.nrrd");
        let vol = Volume::new(vec![0f32; 8], [2, 2, 2], [1.0; 3]);
        write_nrrd(&path, &vol, false).unwrap();
        assert!(matches!(
            read_nrrd_f32_region(&path, [0..2, 0..3, 0..1]),
            Err(NrrdError::BadRegion { .. })
        ));
        let h = read_nrrd_header(&path).unwrap();
        assert_eq!(h.dims, [2, 2, 2]);
    }
}
