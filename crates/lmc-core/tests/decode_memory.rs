//! What decoding the largest chunks the format allows costs in memory,
//! counted by a global allocator (its own test binary, so that no other
//! test allocates meanwhile): the target is under 64 MiB a thread, output
//! aside, whatever a container declares (issue 15, item 5).

mod common;
use common::{CraftChunk, craft};

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use lmc_core::codec::PlaneCodec;
use lmc_core::format::MAX_CHUNK_LEN;
use lmc_core::{Container, Dtype, SegmentKind};

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = NOW.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn verifying_the_largest_chunks_stays_under_64_mib_a_thread() {
    // 32 chunks of 4 MiB of F32, every plane constant: 152 KB of container
    // for 128 MiB of output, each chunk decoded through the plane scratch.
    let chunks = (0..32)
        .map(|_| CraftChunk {
            raw_len: MAX_CHUNK_LEN,
            planes: vec![(PlaneCodec::Constant, vec![1]); 4],
        })
        .collect();
    let kind = SegmentKind::Tensor {
        name: "w".into(),
        dtype: Dtype::F32,
        shape: vec![],
    };
    let file = craft(0, vec![(kind, chunks)], 0);
    let c = Container::open(&file).unwrap();
    for threads in [1, 2, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let base = NOW.load(Relaxed);
        PEAK.store(base, Relaxed);
        // The whole-file hash is wrong (0): the error comes after every chunk.
        let e = pool.install(|| c.verify(&mut |_| true)).unwrap_err();
        assert!(matches!(e, lmc_core::Error::FileHash { .. }), "{e}");
        let peak = PEAK.load(Relaxed) - base;
        eprintln!("{threads} threads: peak {} MiB", peak >> 20);
        // Measured about 11 MiB a thread; the target is 64.
        assert!(
            peak < threads * (24 << 20),
            "{threads} threads: {peak} bytes"
        );
    }
}
