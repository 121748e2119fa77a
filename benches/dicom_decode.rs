//! DICOM decode throughput: Part 10 bytes in memory → HU volume
//! (parse, decode, rescale, sort, stack), single thread.
//!
//!     cargo bench --bench dicom_decode
//!
//! Cases:
//! * a synthetic 512×512×64 CT series, Explicit VR Little Endian (written by
//!   `imaging::dicom::synthetic`), the common uncompressed case;
//! * each committed fixture series (64×64×12: explicit, implicit, deflate,
//!   RLE, JPEG lossless), to compare transfer syntaxes.
//!
//! MB/s counts encoded input bytes; Mvox/s counts output voxels.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use oncohooks::imaging::Volume;
use oncohooks::imaging::dicom::synthetic::series_from_volume;
use oncohooks::imaging::dicom::{AssembleOptions, CtSlice, assemble_ct, list_files};

fn run(name: &str, parts: &[Vec<u8>], repeats: usize) {
    let bytes: usize = parts.iter().map(Vec::len).sum();
    let mut best = Duration::MAX;
    let mut voxels = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let slices: Vec<CtSlice> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| CtSlice::from_bytes(format!("part {i}"), p).expect("decodes"))
            .collect();
        let ct = assemble_ct(slices, &AssembleOptions::default()).expect("assembles");
        best = best.min(t.elapsed());
        voxels = ct.volume.len();
        std::hint::black_box(ct);
    }
    let s = best.as_secs_f64();
    println!(
        "{name:<32} {:>4} slices {:>8.2} MB in {:>8.2} ms  {:>7.1} MB/s  {:>6.1} Mvox/s  (best of {repeats})",
        parts.len(),
        bytes as f64 / 1e6,
        s * 1e3,
        bytes as f64 / 1e6 / s,
        voxels as f64 / 1e6 / s,
    );
}

fn main() {
    let (nx, ny, nz) = (512, 512, 64);
    let data: Vec<f32> = (0..nx * ny * nz)
        .map(|i| ((i * 7919) % 3000) as f32 - 1000.0)
        .collect();
    let mut v = Volume::new(data, [nx, ny, nz], [0.7, 0.7, 1.25]);
    v.origin = [-180.0, -180.0, -300.0];
    let parts: Vec<Vec<u8>> = series_from_volume(&v, "2.25.4242")
        .iter()
        .map(|s| s.to_bytes().expect("encodes"))
        .collect();
    drop(v);
    run("synthetic 512x512x64 explicit LE", &parts, 5);

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/dicom");
    for folder in [
        "ct_explicit",
        "ct_implicit",
        "ct_deflate",
        "ct_rle",
        "ct_jpegll",
    ] {
        let files = list_files(&fixtures.join(folder)).expect("fixture folder");
        let one: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(f).expect("read"))
            .collect();
        run(&format!("fixture {folder} (64x64x12)"), &one, 200);
    }
}
