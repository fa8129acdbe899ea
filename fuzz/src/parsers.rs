//! The checks of the file-format fuzz targets: the parsers of lmc-tensors
//! (pickle, zip, npy, the directory stream) and lmc's pickle rule
//! (lmc-files). Like `lib.rs`, they live in a file of their own so that
//! `crates/lmc-files/tests/fuzz_parsers.rs` replays the corpus through the
//! very same code on stable; each check panics only on a real bug.

use std::path::Path;

use lmc_core::SegmentSpec;
use lmc_tensors::tree::{self, NullSink};

/// The layout must tile exactly `len` bytes.
fn assert_tiles(layout: &[SegmentSpec], len: usize, what: &str) {
    let total = layout.iter().try_fold(0u64, |a, s| a.checked_add(s.len));
    assert_eq!(
        total,
        Some(len as u64),
        "{what}: the layout does not tile the file"
    );
}

/// A pickle is read to its end or to a reason to stop; the walk ends; and a
/// pickle that could not be followed is refused by the rule.
pub fn pickle(data: &[u8]) {
    let p = lmc_tensors::pickle::read(data, 0);
    assert!(p.end.is_none() || p.end <= Some(data.len()));
    assert_eq!(p.end.is_some(), p.stopped.is_none());
    let mut visited = 0usize;
    p.walk(|_, _| visited += 1);
    let refusals = lmc_tensors::torch::pickle_refusals(&p, "data.pkl");
    if p.stopped.is_some() {
        assert!(!refusals.is_empty(), "an unfinished pickle must be refused");
    }
    // The same bytes as an archive's data.pkl and as a legacy file.
    detect(&zip_with_pickle(data));
    let mut legacy = lmc_tensors::torch::LEGACY_MAGIC.to_vec();
    legacy.push(b'.');
    legacy.extend_from_slice(data);
    detect(&legacy);
}

/// A one-member stored zip archive holding `pkl` as `archive/data.pkl`.
fn zip_with_pickle(pkl: &[u8]) -> Vec<u8> {
    let name = b"archive/data.pkl";
    let len = (pkl.len() as u32).to_le_bytes();
    let mut f = b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
    f.extend_from_slice(&len);
    f.extend_from_slice(&len);
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(name);
    f.extend_from_slice(pkl);
    let cd = f.len() as u32;
    f.extend_from_slice(
        b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    );
    f.extend_from_slice(&len);
    f.extend_from_slice(&len);
    f.extend_from_slice(&(name.len() as u16).to_le_bytes());
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(name);
    let cd_len = f.len() as u32 - cd;
    f.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
    f.extend_from_slice(&cd_len.to_le_bytes());
    f.extend_from_slice(&cd.to_le_bytes());
    f.extend_from_slice(&[0, 0]);
    f
}

/// Zip entries that parse lie inside the file and do not overlap.
pub fn zip(data: &[u8]) {
    let Ok(entries) = lmc_tensors::zip::entries(data) else {
        return detect(data);
    };
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for e in &entries {
        let d = e.data(data);
        assert_eq!(d.len() as u64, e.len, "member {:?}", e.name);
        assert!(e.data_offset + e.len <= data.len() as u64);
        spans.push((e.data_offset, e.len));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "members overlap");
    }
    detect(data);
}

/// An `.npy` layout tiles the file.
pub fn npy(data: &[u8]) {
    if let Ok(layout) = lmc_tensors::npy::layout(data, "array") {
        assert_tiles(&layout, data.len(), "npy");
    }
    detect(data);
}

/// Format detection and the pickle rule: a layout that is found tiles the
/// file; allowed, every file is stored (as bytes where it cannot be read);
/// refused only by the rule, and then it names why.
pub fn detect(data: &[u8]) {
    if let Ok(found) = lmc_tensors::detect(data) {
        assert_tiles(&found.layout, data.len(), "detect");
    }
    let p = Path::new("fuzz.pt");
    let allowed = lmc_files::detect_member(p, data, true).expect("allowed, any file is stored");
    assert_tiles(&allowed.layout, data.len(), "detect_member");
    match lmc_files::detect_member(p, data, false) {
        Ok(found) => assert!(found.pickle_refusals.is_empty()),
        Err(lmc_files::InputError::UnsafePickle { refusals, .. }) => assert!(!refusals.is_empty()),
        Err(lmc_files::InputError::Uncheckable { .. }) => {}
        Err(e) => panic!("refused for a reason other than the pickle rule: {e}"),
    }
}

/// A directory stream parses the same whether it arrives whole or in two
/// pieces cut anywhere, and what it accepts has checked paths.
pub fn tree(data: &[u8]) {
    let whole = {
        let mut r = tree::Reader::new();
        r.feed(data, &mut NullSink)
            .and_then(|()| r.finish())
            .is_ok()
    };
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) * data.len() / 256;
    let mut r = tree::Reader::new();
    let split = r
        .feed(&data[..cut], &mut NullSink)
        .and_then(|()| r.feed(&data[cut..], &mut NullSink))
        .and_then(|()| r.finish())
        .is_ok();
    assert_eq!(whole, split, "a stream cut at {cut} reads differently");
}
