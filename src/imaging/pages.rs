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

/// A whole file, mapped copy-on-write where that works, else read.
///
/// A radiomics run reads a 12–18 MB gzip CT once: `read()` copies it from
/// the page cache into fresh (zeroed) pages, which `perf` put at ~20 % of an
/// end-to-end run's CPU (`_copy_to_iter`, `clear_page_erms`); a populated
/// private mapping shares the page-cache pages instead. Writable, because
/// the two-core inflate patches three bytes at its split (and restores
/// them): only the page written is copied.
pub enum FileBytes {
    Mapped(memmap2::MmapMut),
    Read(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

impl std::ops::DerefMut for FileBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

/// [`FileBytes`] of `path`: mapped for a regular non-empty file, otherwise
/// (or if mapping fails) read like [`read_file`].
pub fn map_file(path: &std::path::Path) -> std::io::Result<FileBytes> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > 0 {
        // Private (MAP_PRIVATE: a shared mapping of a file opened
        // read-only cannot be made writable), read-only and populated
        // first (page-table entries for the cached pages, no copy), then
        // made writable: populating a writable private mapping would copy
        // every page up front.
        // SAFETY: the mapping is private, so our writes never reach the
        // file. If another process changed the file while we read it, we
        // would see a mix of old and new bytes, as a torn `read()` would;
        // the caller treats the bytes as untrusted input either way (every
        // decode is bounds- and format-checked). If it truncated the file,
        // touching a page past the new end raises SIGBUS and ends the
        // process: acceptable for the one caller, the `oncohooks radiomics`
        // CLI (`nrrd::read_nrrd_f32_cropped`); the server reads no files
        // this way.
        let mapped = unsafe {
            memmap2::MmapOptions::new()
                .populate()
                .map_copy_read_only(&file)
        }
        .and_then(|m| m.make_mut());
        if let Ok(m) = mapped {
            return Ok(FileBytes::Mapped(m));
        }
    }
    read_file(path).map(FileBytes::Read)
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

    /// A mapped file reads as the file, takes writes, and the writes never
    /// reach the file (the two-core inflate patches its buffer); a file
    /// that cannot be mapped (empty) is read instead.
    #[test]
    fn mapped_file_is_private_and_writable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ct.nrrd");
        std::fs::write(&path, b"NRRD0004 hello").unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&path, perms).unwrap();
        let mut bytes = map_file(&path).unwrap();
        assert!(matches!(bytes, FileBytes::Mapped(_)));
        assert_eq!(&bytes[..], b"NRRD0004 hello");
        bytes[9] = b'j';
        assert_eq!(&bytes[9..], b"jello");
        assert_eq!(std::fs::read(&path).unwrap(), b"NRRD0004 hello");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(map_file(&empty).unwrap(), FileBytes::Read(v) if v.is_empty()));
    }
}
