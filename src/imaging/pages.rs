//! Large buffers that the kernel may back with 2 MiB pages.
//!
//! A radiomics run from gzip NRRD files writes tens of MB into fresh memory
//! (the CT file, its inflated prefix, the two-core inflate's scratch): with
//! 4 KiB pages that is one page fault per 4 KiB, and `perf` put about a third
//! of the CLI's time in the kernel there (docs/benchmarks.md, "Radiomics").
//! Transparent huge pages cut the faults 512-fold, but most distributions
//! ship them in `madvise` mode (`/sys/kernel/mm/transparent_hugepage/enabled`),
//! so a buffer has to ask, before its pages are first touched. Elsewhere, or
//! where the kernel declines, this is a no-op and the buffer is an ordinary
//! `Vec`.

/// Below this a buffer holds no whole aligned huge page worth asking for.
const HUGE: usize = 2 << 20;

/// `vec![T::default(); len]` (all zero for the integer types used here),
/// with its pages advised as huge before anything touches them: a zeroed
/// allocation this large comes straight from the OS untouched.
pub fn zeroed<T: Clone + Default>(len: usize) -> Vec<T> {
    let v = vec![T::default(); len];
    advise(v.as_ptr().cast(), std::mem::size_of_val(v.as_slice()));
    v
}

/// An empty `Vec` with room for `len` bytes, advised as huge (for reading a
/// file into it).
pub fn with_capacity(len: usize) -> Vec<u8> {
    let v = Vec::with_capacity(len);
    advise(v.as_ptr(), v.capacity());
    v
}

/// Reads a whole file into a buffer from `with_capacity`, like
/// `std::fs::read`.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata().map_or(0, |m| m.len() as usize);
    // One byte more than the size so that read_to_end's end-of-file probe
    // does not grow (copy) the buffer.
    let mut v = with_capacity(len + 1);
    file.read_to_end(&mut v)?;
    Ok(v)
}

#[cfg(target_os = "linux")]
fn advise(ptr: *const u8, len: usize) {
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize).saturating_add(len) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside one live allocation of ours, and
        // MADV_HUGEPAGE only changes how its future page faults are served,
        // never its contents. A failure (old kernel, THP disabled) is
        // harmless, so the result is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_ptr: *const u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_ordinary_vectors() {
        let z: Vec<u16> = zeroed(3 << 20);
        assert_eq!(z.len(), 3 << 20);
        assert!(z.iter().all(|&v| v == 0));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(read_file(&path).unwrap(), data);
        assert!(read_file(&dir.path().join("missing")).is_err());
    }
}
