//! Storage of the mmap-written FIB tables (DIR-24-8 and the IPv6 multibit trie): u32
//! cells, each written with one atomic store so the data plane never reads half an entry.
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, bail};

/// Table storage: the BPF arrays through mmap, or plain memory in unit tests.
pub trait Cells {
    fn get(&self, i: usize) -> u32;
    fn set(&mut self, i: usize, value: u32);
}

impl Cells for Vec<u32> {
    fn get(&self, i: usize) -> u32 {
        self[i]
    }
    fn set(&mut self, i: usize, value: u32) {
        self[i] = value;
    }
}

/// A BPF array map (BPF_F_MMAPABLE, u32 values) mapped into this process.
pub struct MmapCells {
    ptr: *mut AtomicU32,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only written through atomics.
unsafe impl Send for MmapCells {}

impl MmapCells {
    /// Maps `len` u32 cells of the array map behind `fd`.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> Result<Self> {
        use std::os::fd::AsRawFd;
        let bytes = len * 4;
        // SAFETY: plain mmap of a BPF array map fd; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of a FIB table: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Cells for MmapCells {
    fn get(&self, i: usize) -> u32 {
        assert!(i < self.len);
        // SAFETY: in bounds of the mapping.
        unsafe { (*self.ptr.add(i)).load(Ordering::Acquire) }
    }
    fn set(&mut self, i: usize, value: u32) {
        assert!(i < self.len);
        // SAFETY: in bounds of the mapping. Release: a block's contents are visible
        // before the entry that points to it.
        unsafe { (*self.ptr.add(i)).store(value, Ordering::Release) }
    }
}

impl Drop for MmapCells {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 4) };
    }
}

/// Cells shared between a writer and concurrent readers, as the BPF maps are shared
/// between the controller and the data plane (tests of make-before-break).
#[cfg(test)]
#[derive(Clone)]
pub struct SharedCells(pub std::sync::Arc<Vec<AtomicU32>>);

#[cfg(test)]
impl SharedCells {
    pub fn new(len: usize) -> Self {
        Self(std::sync::Arc::new(
            (0..len).map(|_| AtomicU32::new(0)).collect(),
        ))
    }
}

#[cfg(test)]
impl Cells for SharedCells {
    fn get(&self, i: usize) -> u32 {
        self.0[i].load(Ordering::Acquire)
    }
    fn set(&mut self, i: usize, value: u32) {
        self.0[i].store(value, Ordering::Release)
    }
}
