//! The binary's memory allocator: mimalloc, asked for plain blocks whenever
//! a plain block is aligned enough, and told to give freed memory back
//! promptly.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_collect, mi_free, mi_malloc, mi_malloc_aligned, mi_option_set, mi_option_t, mi_realloc,
    mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// mimalloc instead of glibc's malloc: the request path allocates small,
/// short-lived objects on two worker threads, where glibc's arena locks and
/// consolidation showed up in profiles (benches/RESULTS.md).
///
/// Unlike the `mimalloc` crate's allocator, which passes every request to
/// `mi_malloc_aligned`, this one calls `mi_malloc` when the alignment asked
/// for is one every block of that size has anyway. mimalloc 3's aligned
/// entry point takes its fast path only while the matching page has a free
/// block at hand; otherwise it over-allocates unless the block size is a
/// power of two, so a 48-byte request could take a 64-byte block through
/// the slow path.
pub(crate) struct Mimalloc;

/// `MI_MAX_ALIGN_SIZE`: every mimalloc block of at least this many bytes
/// starts at a multiple of it, and every smaller block at a multiple of 8
/// (`mi_assert_internal` in mimalloc's `alloc.c`; `types.h`).
const NATURAL_ALIGN: usize = 16;

/// Whether any block `size` bytes long is aligned to `align` by itself.
fn naturally_aligned(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && align <= size
}

// SAFETY: each method hands the request to the mimalloc function for it,
// choosing the unaligned one only when `naturally_aligned` says its blocks
// satisfy the layout's alignment; `mi_free` and `mi_realloc*` accept blocks
// from any of mimalloc's allocation functions.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if naturally_aligned(layout.size(), layout.align()) {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if naturally_aligned(layout.size(), layout.align()) {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if naturally_aligned(new_size, layout.align()) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e` of the
/// bundled mimalloc 3; the binding names no constant for it).
const PURGE_DELAY: mi_option_t = 15;

/// Makes mimalloc give memory it no longer uses back to the system within
/// 10 ms instead of a second.
///
/// mimalloc purges only when the thread that freed the memory next calls
/// into the allocator after the delay; with a second's delay a worker that
/// goes quiet after a burst (10,000 connections parking) never gets there,
/// and kept about 180 MiB resident instead of 50 MiB. Purging at once (0)
/// called `madvise` after about 7% of requests under load (`strace -c`) and
/// cost roughly a tenth more CPU per request than the default; 10 ms keeps
/// the memory figure with a third of those calls (benches/RESULTS.md).
/// Since the workers also collect once a second
/// ([`collect_freed_memory`]), a quiet worker gives its memory back with
/// mimalloc's default delay too: a trial at a07fc9e measured the same idle
/// and streaming memory with either delay and no speed difference beyond
/// the noise, so 10 ms stayed (benches/RESULTS.md, "Memory").
/// mimalloc's own `MIMALLOC_PURGE_DELAY`, when set, still wins, so the
/// choice can be measured again with any load.
#[allow(unsafe_code)]
pub(crate) fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain option setter of the allocator, called before any
    // other thread exists (the options are not synchronised).
    unsafe { mi_option_set(PURGE_DELAY, 10) }
}

/// Gives back what the calling thread has freed, as far as the purge delay
/// allows; each worker runs it once a second
/// ([`chime_gateway::workers::set_housekeeping`]).
///
/// The purge delay alone is not enough: mimalloc purges only when the
/// thread that freed the memory calls into it again, and a worker that
/// went quiet after streaming 1 GiB kept about 6 MiB it had freed. With
/// two workers taking streams in turn, each kept its own: +11 MiB stayed
/// after four streams, +5–6 MiB with this (benches/RESULTS.md, "Memory").
#[allow(unsafe_code)]
pub(crate) fn collect_freed_memory() {
    // SAFETY: no arguments beyond the flag; collects the calling thread's
    // heap (not forced: pages in use are left alone).
    unsafe { mi_collect(false) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;
    use proptest::prelude::*;

    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_names_mimallocs_option() {
        // SAFETY: reads an option; tests set none.
        let default = unsafe { mi_option_get(PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "option {PURGE_DELAY} is not the purge delay (1000 ms)"
        );
    }

    #[test]
    fn the_plain_path_is_taken_only_where_blocks_are_aligned_anyway() {
        assert!(naturally_aligned(48, 8));
        assert!(naturally_aligned(48, 16));
        assert!(naturally_aligned(1, 1));
        assert!(naturally_aligned(8, 8));
        assert!(
            !naturally_aligned(8, 16),
            "an 8-byte block is 8-aligned only"
        );
        assert!(!naturally_aligned(64, 32));
        assert!(!naturally_aligned(4096, 4096));
    }

    /// Allocates `layout` from [`Mimalloc`] (zeroed or not), checks the
    /// block's alignment, fills it, grows or shrinks it to `new_size` and
    /// checks the alignment and the bytes kept.
    #[allow(unsafe_code)]
    fn round_trip(layout: Layout, zeroed: bool, new_size: usize) {
        let a = Mimalloc;
        // SAFETY: non-zero sizes (the strategy's); every pointer is checked
        // for null, used within its size and freed once with its layout.
        unsafe {
            let p = if zeroed {
                a.alloc_zeroed(layout)
            } else {
                a.alloc(layout)
            };
            assert!(!p.is_null());
            assert_eq!(p as usize % layout.align(), 0, "{layout:?}");
            if zeroed {
                assert!(std::slice::from_raw_parts(p, layout.size())
                    .iter()
                    .all(|&b| b == 0));
            }
            for i in 0..layout.size() {
                *p.add(i) = i as u8;
            }
            let q = a.realloc(p, layout, new_size);
            assert!(!q.is_null());
            assert_eq!(q as usize % layout.align(), 0, "{layout:?} -> {new_size}");
            for i in 0..layout.size().min(new_size) {
                assert_eq!(*q.add(i), i as u8);
            }
            a.dealloc(
                q,
                Layout::from_size_align(new_size, layout.align()).unwrap(),
            );
        }
    }

    proptest! {
        #[test]
        fn every_block_meets_its_layouts_alignment(
            size in 1usize..20_000,
            align_log in 0u32..13,
            zeroed: bool,
            new_size in 1usize..20_000,
        ) {
            round_trip(Layout::from_size_align(size, 1 << align_log).unwrap(), zeroed, new_size);
        }
    }

    #[test]
    #[allow(unsafe_code)]
    fn many_live_blocks_of_awkward_sizes_stay_aligned() {
        // Enough live blocks of one size class to use up pages, so
        // allocation leaves the free-list fast path.
        let a = Mimalloc;
        for (size, align) in [(24, 8), (48, 16), (80, 16), (1536, 16), (40, 8), (8, 16)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; each block is checked for null and
            // freed once with its layout.
            unsafe {
                let blocks: Vec<*mut u8> = (0..5_000).map(|_| a.alloc(layout)).collect();
                for &p in &blocks {
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{layout:?}");
                }
                for p in blocks {
                    a.dealloc(p, layout);
                }
            }
        }
    }
}
