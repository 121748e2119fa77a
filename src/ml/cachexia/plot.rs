//! Minimal line plots as PNG, written with flate2 (already a dependency):
//! no plotting crate, no fonts. Axes run 0..1 on both sides with grid lines
//! every 0.1 (heavier every 0.5); titles, axis names and the legend are in
//! the markdown report beside each image.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

pub type Rgb = [u8; 3];

pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [150, 150, 150];
/// Colour-blind-safe series colours (Okabe–Ito), named in the report.
pub const SERIES: [(Rgb, &str); 6] = [
    ([0, 114, 178], "blue"),
    ([230, 159, 0], "orange"),
    ([0, 158, 115], "green"),
    ([204, 121, 167], "pink"),
    ([213, 94, 0], "vermillion"),
    ([86, 180, 233], "sky blue"),
];

pub struct Canvas {
    w: usize,
    h: usize,
    margin: usize,
    px: Vec<u8>,
}

impl Canvas {
    /// A unit-square plot area of `size` pixels with a margin.
    pub fn unit_square(size: usize) -> Self {
        let margin = 24;
        let w = size + 2 * margin;
        let mut c = Self {
            w,
            h: w,
            margin,
            px: vec![255; w * w * 3],
        };
        for i in 0..=10 {
            let v = i as f64 / 10.0;
            let col = if i % 5 == 0 { GREY } else { [225, 225, 225] };
            c.line((v, 0.0), (v, 1.0), col, 1);
            c.line((0.0, v), (1.0, v), col, 1);
        }
        c.line((0.0, 0.0), (1.0, 0.0), BLACK, 2);
        c.line((0.0, 0.0), (0.0, 1.0), BLACK, 2);
        c
    }

    fn to_px(&self, (x, y): (f64, f64)) -> (f64, f64) {
        let s = (self.w - 2 * self.margin) as f64;
        (
            self.margin as f64 + x.clamp(0.0, 1.0) * s,
            (self.h - self.margin) as f64 - y.clamp(0.0, 1.0) * s,
        )
    }

    fn dot(&mut self, x: i64, y: i64, col: Rgb, r: i64) {
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && (px as usize) < self.w && (py as usize) < self.h {
                    let i = (py as usize * self.w + px as usize) * 3;
                    self.px[i..i + 3].copy_from_slice(&col);
                }
            }
        }
    }

    /// A straight line in data coordinates (0..1), `width` pixels thick.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), col: Rgb, width: i64) {
        let (x0, y0) = self.to_px(a);
        let (x1, y1) = self.to_px(b);
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        let r = (width - 1) / 2;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let x = x0 + t * (x1 - x0);
            let y = y0 + t * (y1 - y0);
            self.dot(x.round() as i64, y.round() as i64, col, r);
        }
    }

    pub fn polyline(&mut self, pts: &[(f64, f64)], col: Rgb, width: i64) {
        for w in pts.windows(2) {
            self.line(w[0], w[1], col, width);
        }
    }

    /// A filled square marker.
    pub fn marker(&mut self, p: (f64, f64), col: Rgb, size: i64) {
        let (x, y) = self.to_px(p);
        self.dot(x.round() as i64, y.round() as i64, col, size);
    }

    /// PNG bytes (8-bit RGB, filter 0 on every row).
    pub fn png(&self) -> std::io::Result<Vec<u8>> {
        encode_png(self.w, self.h, 3, &self.px)
    }
}

/// The ROC panel of both evaluation reports: the chance diagonal, then one
/// curve per method (false-positive rate → true-positive rate) in the
/// [`SERIES`] colours, in order.
pub fn roc_canvas(curves: &[(String, Vec<(f64, f64)>)]) -> Canvas {
    let mut roc = Canvas::unit_square(400);
    roc.line((0.0, 0.0), (1.0, 1.0), GREY, 1);
    for (i, (_, pts)) in curves.iter().enumerate() {
        roc.polyline(pts, SERIES[i % SERIES.len()].0, 2);
    }
    roc
}

/// PNG bytes of 8-bit pixels, row-major: `channels` 1 (greyscale, colour
/// type 0) or 3 (RGB, colour type 2); filter 0 on every row (PNG 1.2 §4.1.3,
/// §6). Also used by the review app for the nodule's CT patch.
pub fn encode_png(w: usize, h: usize, channels: usize, px: &[u8]) -> std::io::Result<Vec<u8>> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let colour_type = match channels {
        1 => 0,
        3 => 2,
        c => return Err(invalid(format!("PNG: {c} channels (expected 1 or 3)"))),
    };
    if w == 0 || h == 0 || px.len() != w * h * channels {
        return Err(invalid(format!(
            "PNG: {} bytes for {w}x{h}x{channels} pixels",
            px.len()
        )));
    }
    let mut raw = Vec::with_capacity((w * channels + 1) * h);
    for row in px.chunks(w * channels) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&raw)?;
    let idat = z.finish()?;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, colour_type, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_has_signature_header_and_valid_chunk_crcs() {
        let mut c = Canvas::unit_square(50);
        c.polyline(&[(0.0, 0.0), (0.5, 0.8), (1.0, 1.0)], SERIES[0].0, 2);
        let png = c.png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 98);
        // Walk the chunks and check every CRC.
        let mut i = 8;
        let mut kinds = Vec::new();
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
            let body = &png[i + 4..i + 8 + len];
            let mut crc = flate2::Crc::new();
            crc.update(body);
            let want = u32::from_be_bytes(png[i + 8 + len..i + 12 + len].try_into().unwrap());
            assert_eq!(crc.sum(), want);
            kinds.push(String::from_utf8_lossy(&body[..4]).into_owned());
            i += 12 + len;
        }
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
    }
}
