//! The pickle rule on crafted checkpoints: each pickle is written opcode by
//! opcode here and never executed. Every way around the rule that a review
//! found is refused; ordinary checkpoints pass.

use std::path::Path;

use lmc_files::{InputError, detect_input, detect_member};

/// A zip archive of `(name, method, data)` members (method 0: stored, 8:
/// deflated; the data is written as given either way).
fn zip(members: &[(&str, u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, method, data) in members {
        let off = out.len() as u32;
        let (n, len) = (name.len() as u16, data.len() as u32);
        let mut fields = Vec::new(); // version, flags, method, time, date, crc
        fields.extend_from_slice(&[20, 0, 0, 0]);
        fields.extend_from_slice(&method.to_le_bytes());
        fields.extend_from_slice(&[0; 8]);
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&fields);
        for v in [len, len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00");
        central.extend_from_slice(&fields);
        for v in [len, len] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    for _ in 0..2 {
        out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A `torch.save` archive whose `data.pkl` is `pkl`, with one F32 storage
/// of two elements.
fn torch_file(pkl: &[u8], pkl_method: u16) -> Vec<u8> {
    zip(&[
        ("archive/data.pkl", pkl_method, pkl),
        ("archive/byteorder", 0, b"little"),
        ("archive/data/0", 0, &[0u8; 8]),
        ("archive/version", 0, b"3\n"),
    ])
}

/// `{'w': _rebuild_tensor_v2(pid('storage', FloatStorage, '0', 'cpu', 2), 0, (2,), (1,), False, OrderedDict())}`
/// as torch.save writes it (protocol 2).
const GOOD: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x02tq\x07QK\x00K\x02\x85q\x08K\x01\x85q\x09\x89ccollections\nOrderedDict\nq\x0a)Rq\x0btq\x0cRq\x0ds.";

/// The refusals `detect_input` gives for `bytes`, or `None` if it accepts.
fn refused(bytes: &[u8]) -> Option<String> {
    let p = Path::new("evil.pt");
    // Allowed, it is always stored (as bytes where it cannot be read).
    assert!(detect_member(p, bytes, true).is_ok());
    let member = detect_member(p, bytes, false);
    match detect_input(p, bytes, None, false) {
        Ok(_) | Err(InputError::UnknownFormat { .. }) => {
            assert!(member.is_ok());
            None
        }
        Err(e @ (InputError::UnsafePickle { .. } | InputError::Uncheckable { .. })) => {
            assert!(
                member.is_err(),
                "a directory member must be refused too: {e}"
            );
            let text = e.to_string();
            assert!(text.contains("--allow-pickle-calls"), "{text}");
            Some(text)
        }
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

#[test]
fn an_ordinary_checkpoint_passes() {
    let f = torch_file(GOOD, 0);
    assert_eq!(refused(&f), None);
    let found = detect_input(Path::new("ok.pt"), &f, None, false).unwrap();
    assert!(found.pickle_refusals.is_empty());
    assert!(found.layout.iter().any(|s| matches!(
        &s.kind,
        lmc_core::SegmentKind::Tensor { name, .. } if name == "w"
    )));
}

#[test]
fn a_call_to_os_system_is_refused() {
    let evil = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
    let why = refused(&torch_file(evil, 0)).unwrap();
    assert!(
        why.contains("archive/data.pkl names os.system (offset 2)"),
        "{why}"
    );
}

/// torch.load reads the pickle whether or not the archive compresses it.
#[test]
fn a_deflated_pickle_is_refused() {
    let why = refused(&torch_file(GOOD, 8)).unwrap();
    assert!(
        why.contains("archive/data.pkl is compressed inside the archive"),
        "{why}"
    );
}

/// `p1_0\n`: Python reads the PUT key `1_0` as 10; a reader that stops
/// there must not let what follows through.
#[test]
fn a_pickle_the_reader_cannot_follow_is_refused() {
    let evil = b"(p1_0\ncos\nsystem\n(S'true'\ntR.";
    let why = refused(&torch_file(evil, 0)).unwrap();
    assert!(why.contains("cannot be followed to its end"), "{why}");
    assert!(why.contains("bad PUT key"), "{why}");
}

/// `_rebuild_from_type_v2(func, type, args, state)` calls `func(*args)`:
/// naming `os.system` as an argument of an allowed call is enough.
#[test]
fn a_function_passed_to_an_allowed_call_is_refused() {
    let evil = b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(cos\nsystem\nctorch\nTensor\n(S'true'\ntNtR.";
    let why = refused(&torch_file(evil, 0)).unwrap();
    assert!(why.contains("names os.system"), "{why}");
    assert!(!why.contains("_rebuild_from_type_v2"), "{why}");
}

#[test]
fn calls_of_values_built_in_the_pickle_and_extensions_are_refused() {
    // getattr(__import__('os'), 'system') is two names; a call of a call's
    // result has no name at all.
    let built = b"\x80\x02ccollections\nOrderedDict\n)R)R.";
    let why = refused(&torch_file(built, 0)).unwrap();
    assert!(
        why.contains("calls a callable built inside the pickle"),
        "{why}"
    );
    let ext = b"\x80\x02\x82\x01)R.";
    let why = refused(&torch_file(ext, 0)).unwrap();
    assert!(why.contains("names copyreg extension.1"), "{why}");
    // A name that is allowed but not callable.
    let dtype_call = b"\x80\x02ctorch\nfloat32\n)R.";
    let why = refused(&torch_file(dtype_call, 0)).unwrap();
    assert!(why.contains("calls torch.float32"), "{why}");
}

/// Every pickle in the archive is checked, not only the one lmc reads.
#[test]
fn a_second_pickle_in_the_archive_is_checked() {
    let evil = b"cos\nsystem\n(S'true'\ntR.";
    let f = zip(&[
        ("archive/data.pkl", 0, GOOD),
        ("archive/data/0", 0, &[0u8; 8]),
        ("other/data.pkl", 0, evil),
    ]);
    let why = refused(&f).unwrap();
    assert!(why.contains("other/data.pkl names os.system"), "{why}");
}

/// A legacy (pre-1.6) file: magic number, protocol, system info, object
/// and storage keys, each a pickle that torch.load reads.
fn legacy(sys_info: &[u8], object: &[u8], keys: &[u8]) -> Vec<u8> {
    let mut f = lmc_tensors::torch::LEGACY_MAGIC.to_vec();
    f.push(b'.');
    f.extend_from_slice(b"\x80\x02M\xe9\x03.");
    f.extend_from_slice(sys_info);
    f.extend_from_slice(object);
    f.extend_from_slice(keys);
    f
}

#[test]
fn legacy_files_have_every_pickle_checked() {
    let info = b"\x80\x02}q\x00X\x0d\x00\x00\x00little_endianq\x01\x88s.";
    let empty_dict = b"\x80\x02}q\x00.";
    let no_keys = b"\x80\x02]q\x00.";
    let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.";
    assert_eq!(refused(&legacy(info, empty_dict, no_keys)), None);
    let why = refused(&legacy(evil, empty_dict, no_keys)).unwrap();
    assert!(why.contains("the system info pickle at offset"), "{why}");
    assert!(why.contains("names os.system"), "{why}");
    let why = refused(&legacy(info, evil, no_keys)).unwrap();
    assert!(why.contains("the object pickle at offset"), "{why}");
    // The storage keys: torch.load unpickles them even with no storages.
    // A call where the list should be cannot be read as keys: refused as
    // a file lmc cannot check.
    let evil_keys = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.";
    let why = refused(&legacy(info, empty_dict, evil_keys)).unwrap();
    assert!(why.contains("no list of storage keys"), "{why}");
    // Inside a list of keys: refused either way (named, or as unreadable).
    let evil_list = b"\x80\x02]q\x00cos\nsystem\nX\x04\x00\x00\x00true\x85Ra.";
    let why = refused(&legacy(info, empty_dict, evil_list)).unwrap();
    assert!(
        why.contains("cannot be checked") || why.contains("names os.system"),
        "{why}"
    );
}

/// A file that looks like a checkpoint but cannot be read may hold a
/// pickle torch.load would still run: refused, not stored as bytes.
#[test]
fn an_unreadable_archive_is_refused_in_a_directory_too() {
    let f = torch_file(GOOD, 0);
    let cut = &f[..f.len() - 10];
    let why = refused(cut).unwrap();
    assert!(why.contains("cannot be checked"), "{why}");
    // Allowed, it is stored as bytes with a note.
    let found = detect_member(Path::new("cut.pt"), cut, true).unwrap();
    assert_eq!(found.notes.len(), 1);
    // Other files of unknown format are bytes without any fuss.
    let text = detect_member(Path::new("notes.txt"), b"hello", false).unwrap();
    assert!(text.notes.is_empty() && text.pickle_refusals.is_empty());
}

const EVIL: &[u8] = b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.";

/// torch's zip reader (miniz) matches names ignoring case: `data.PKL` is
/// the pickle it loads, and two names that differ only in case are refused.
#[test]
fn pickle_names_in_any_case_are_checked() {
    let f = zip(&[
        ("archive/data.PKL", 0, EVIL),
        ("archive/data/0", 0, &[0u8; 8]),
    ]);
    let why = refused(&f).unwrap();
    assert!(why.contains("archive/data.PKL names posix.system"), "{why}");
    let f = zip(&[("archive/data.pkl", 0, GOOD), ("archive/DATA.PKL", 0, EVIL)]);
    let why = refused(&f).unwrap();
    assert!(why.contains("but for letter case"), "{why}");
}

/// A second end record hidden in the archive comment: other readers take
/// the last signature, lmc the one whose comment ends the file.
#[test]
fn an_archive_with_two_end_records_is_refused() {
    let mut f = torch_file(GOOD, 0);
    let n = f.len();
    // A comment of 23 bytes holding a second (empty) end record.
    let mut comment = b"PK\x05\x06".to_vec();
    comment.resize(23, 0);
    f[n - 2..].copy_from_slice(&(comment.len() as u16).to_le_bytes());
    f.extend_from_slice(&comment);
    let why = refused(&f).unwrap();
    assert!(
        why.contains("two end of central directory records"),
        "{why}"
    );
}

/// A ustar header block for a member `name` of `len` bytes.
fn tar_header(name: &str, len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{len:011o}\0").as_bytes());
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, data) in members {
        t.extend(tar_header(name, data.len()));
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.resize(t.len() + 1024, 0);
    t
}

/// torch.load reads any file that is not a zip archive as a legacy file:
/// a plain pickle is unpickled from its first byte, and a tar archive's
/// `sys_info`, `pickle` and `storages` members are unpickled.
#[test]
fn plain_pickles_and_torch_tar_archives_are_refused() {
    let why = refused(EVIL).unwrap();
    assert!(why.contains("its pickle names posix.system"), "{why}");
    // Only names Python could import count where the reader stops early.
    let stops = b"cposix\nsystem\n\xff";
    assert!(refused(stops).unwrap().contains("names posix.system"));
    for text in [
        &b"cat notes.txt\nthen this\n"[..],
        b"{\"a\": 1}",
        b"]\x00\x01",
    ] {
        let found = detect_member(Path::new("x"), text, false).unwrap();
        assert!(found.pickle_refusals.is_empty(), "{text:?}");
    }
    let t = tar(&[("storages", EVIL), ("tensors", b""), ("pickle", GOOD)]);
    let why = refused(&t).unwrap();
    assert!(
        why.contains("tar archive with a member \"storages\""),
        "{why}"
    );
    let other = tar(&[("notes.txt", b"hello")]);
    assert!(detect_member(Path::new("x.tar"), &other, false).is_ok());
    // A legacy file that is also a tar archive (its magic in the name field).
    let mut poly = legacy(b"\x80\x02}.", b"\x80\x02}.", b"\x80\x02].");
    poly.resize(100, 0);
    let mut h = tar_header("x", 0);
    h[..100].copy_from_slice(&poly);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut poly = h;
    poly.extend(tar(&[("sys_info", EVIL)]));
    let why = refused(&poly).unwrap();
    assert!(why.contains("also a tar archive"), "{why}");
}

/// DCP items: only a torch.save archive whose pickles pass goes to torch.
#[test]
fn saved_objects_must_be_torch_save_archives() {
    use lmc_files::check_saved_object;
    assert!(check_saved_object("item w", &torch_file(GOOD, 0), false).is_ok());
    let e = check_saved_object("item w", EVIL, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("item w: it is not a torch.save archive"), "{e}");
    let plain_zip = zip(&[("a.txt", 0, b"hi")]);
    assert!(check_saved_object("item w", &plain_zip, false).is_err());
    assert!(check_saved_object("item w", EVIL, true).is_ok());
}
