//! Protection against capacity bombs in third-party decoders.
//!
//! The `kafka-protocol` codec sizes a decoded array from the length the client sent, before
//! checking that the bytes are there: one Metadata request declaring 2^31 topics asks for a
//! 150 GB allocation, which the kernel refuses, and Rust aborts the process on a refused
//! allocation. The request itself would fail a moment later, after a few bytes.
//!
//! This allocator serves allocations of 1 GiB and more (never needed by the broker, whose
//! frames are capped at `socket.request.max.bytes`) from `mmap(MAP_NORESERVE)`: address space
//! without a commitment of memory, which the kernel grants, and which costs nothing unless
//! written. The decoder fails on the missing bytes, the reservation is unmapped, the
//! connection is closed. Everything else goes to the system allocator unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;

const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

/// The global allocator of every binary that links the broker.
#[derive(Debug)]
pub struct GuardedAllocator;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_huge(&layout) {
            // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
            return unsafe { System.alloc(layout) };
        }
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let mapped = unsafe {
            mmap_anonymous(
                null_mut(),
                layout.size(),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        };
        mapped.map_or(null_mut(), |ptr| ptr.cast())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            return unsafe { self.alloc(layout) };
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` came from `alloc` with this layout, hence from `mmap` of this size.
            let _ = unsafe { rustix::mm::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_huge(&layout) && new_size < HUGE {
            // SAFETY: both sides are the system allocator's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: allocate, copy the common prefix, free the old block.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_capacity_bomb_does_not_abort() {
        // 2^31 elements of 72 bytes: what a hostile Metadata request asks the codec for.
        let bomb: Vec<[u8; 72]> = Vec::with_capacity(1 << 31);
        assert!(bomb.capacity() >= 1 << 31);
        drop(bomb);
        let mut small = Vec::with_capacity(16);
        small.extend_from_slice(&[1u8; 16]);
        small.resize(1 << 20, 0);
        assert_eq!(small.len(), 1 << 20);
    }
}
