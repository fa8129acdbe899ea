//! `Pickle::walk` on a pickle that names one long string many times: the
//! walk must cost a few words per reference, not a copy of the string per
//! path (it once built each path string eagerly, so a 1 MB key referenced
//! 300,000 times by 2-byte `BINGET`s wanted 300 GB).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use lmc_tensors::pickle::{self, MAX_KEY_PART, MAX_PATH, Obj};
use lmc_tensors::torch;

/// The tests measure one heap: one at a time.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Counts the live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

const REFS: usize = 300_000;

/// `{KEY: {KEY: pid, KEY: pid, ...}}`: one 1 MB key, memoized
/// once, then referenced by `BINGET` (`h`) and `LONG_BINGET` (`j`) as the
/// key of the outer dict and of `REFS` inner dict entries whose values are
/// all one persistent id.
fn crafted() -> Vec<u8> {
    let key = "k".repeat(1 << 20);
    let mut b = b"\x80\x02}".to_vec();
    b.push(b'X');
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(b"q\x00");
    // The persistent id ('storage', torch.FloatStorage, '0', 'cpu', 1), memo 1.
    b.extend_from_slice(
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQq\x01",
    );
    b.extend_from_slice(b"0}(");
    for i in 0..REFS {
        if i % 1000 != 0 {
            b.extend_from_slice(b"h\x00h\x01");
        } else {
            b.extend_from_slice(b"j\x00\x00\x00\x00j\x01\x00\x00\x00");
        }
    }
    b.extend_from_slice(b"us.");
    b
}

#[test]
fn one_long_key_referenced_many_times() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let b = crafted();
    assert!(b.len() < 5 << 19, "{}", b.len());
    let p = pickle::read(&b, 0);
    assert_eq!(p.stopped, None, "{:?}", p.stopped);

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let mut visits = 0usize;
    let mut rendered = 0usize;
    let mut longest = 0usize;
    p.walk(|path, v| {
        visits += 1;
        // Render as `torch::summarize` does: a persistent id's path, the
        // first time; the rest only asks whether the path is empty.
        if let Some(Obj::Persistent(_)) = p.obj(v) {
            if rendered == 0 {
                let s = path.to_string();
                rendered += s.len();
                longest = longest.max(s.len());
            }
        } else {
            assert!(!path.is_empty() || visits == 1);
        }
    });
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed) - before;

    // Two dicts, the persistent ids, and the first one's tuple and its 5 items.
    assert_eq!(visits, 2 + REFS + 1 + 5);
    assert_eq!(longest, MAX_KEY_PART * 2 + 1 + 2 * '…'.len_utf8());
    assert!(longest <= MAX_PATH + 3);
    // A few words per reference (about 30 MB for 300,000), against the
    // 300 GB of one 1 MB path string per reference.
    assert!(grew < 64 << 20, "walk grew the heap by {grew} bytes");
    assert!(took.as_secs() < 30, "walk took {took:?}");
    eprintln!("walk: {visits} visits, heap grew by {grew} bytes, {took:?}");
}

fn x(s: &[u8]) -> Vec<u8> {
    let mut b = vec![b'X'];
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s);
    b
}

/// `STACK_GLOBAL` of one memoized 1 MB string, 200,000 times (5 bytes
/// each): the reader once copied both strings per name (400 GB), and the
/// rule scanned and formatted them per name.
#[test]
fn one_long_name_named_many_times() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = b"\x80\x04".to_vec();
    b.extend(x(&vec![b'k'; 1 << 20]));
    b.extend_from_slice(b"q\x000](");
    for _ in 0..200_000 {
        b.extend_from_slice(b"h\x00h\x00\x93");
    }
    b.extend_from_slice(b"e.");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let p = pickle::read(&b, 0);
    assert_eq!(p.stopped, None, "{:?}", p.stopped);
    assert_eq!(p.globals().count(), 200_000);
    let why = torch::pickle_refusals(&p, "data.pkl");
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed) - before;
    // Named once, at its first offset, cut short.
    assert_eq!(why.len(), 1, "{}", why.len());
    assert!(
        why[0].contains("(offset 1048592)") && why[0].len() < 600,
        "{}",
        why[0].len()
    );
    assert!(grew < 64 << 20, "reading grew the heap by {grew} bytes");
    assert!(took.as_secs() < 30, "took {took:?}");
    eprintln!("STACK_GLOBAL: heap grew by {grew} bytes, {took:?}");
}

/// One persistent id whose storage key is a 1 MB string, named 200,000
/// times (`BINGET`, `BINPERSID`: 3 bytes each): `summarize` once copied and
/// hashed the key per reference (minutes).
#[test]
fn one_long_storage_key_named_many_times() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = b"\x80\x02]((".to_vec();
    b.extend(x(b"storage"));
    b.extend_from_slice(b"ctorch\nFloatStorage\n");
    b.extend(x(&vec![b'k'; 1 << 20]));
    b.extend(x(b"cpu"));
    b.extend_from_slice(b"K\x00tq\x010");
    for _ in 0..200_000 {
        b.extend_from_slice(b"h\x01Q");
    }
    b.extend_from_slice(b"e.");
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let s = torch::summarize(&b, 0, "data.pkl");
    let took = started.elapsed();
    let grew = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(s.stopped, None, "{:?}", s.stopped);
    assert_eq!(s.storages.len(), 1);
    assert_eq!(s.storages[0].name, "0");
    // Mostly the reader's own arena (an object per `BINPERSID`).
    assert!(grew < 128 << 20, "summarize grew the heap by {grew} bytes");
    assert!(took.as_secs() < 30, "took {took:?}");
    eprintln!("persistent ids: heap grew by {grew} bytes, {took:?}");
}
