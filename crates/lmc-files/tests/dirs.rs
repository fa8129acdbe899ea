//! The directory walk and restore of lmc-files, on disk: a round trip that
//! compares bytes, modes and links; what may be replaced; nothing left
//! behind when a restore fails.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use lmc_files::{DirBuilder, Error, walk};
use lmc_tensors::tree::Kind;

/// path -> (kind, mode, contents or link target)
fn snapshot(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for item in walk(root).unwrap().items {
        let e = item.entry;
        let v = match e.kind {
            Kind::File => ('f', e.mode, fs::read(&item.source).unwrap()),
            Kind::Dir => ('d', e.mode, Vec::new()),
            Kind::Symlink => ('l', 0, item.target.unwrap().into_bytes()),
        };
        out.insert(e.path, v);
    }
    out
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Restores `src`'s listing through a DirBuilder.
fn copy(src: &Path, dest: &Path, force: bool) -> Result<(), Error> {
    let listing = walk(src)?;
    let mut b = DirBuilder::create(dest, force, false)?;
    for item in &listing.items {
        let e = &item.entry;
        match e.kind {
            Kind::Dir => b.dir(&e.path, e.mode)?,
            Kind::File => b.file(&e.path, e.mode, &fs::read(&item.source).unwrap())?,
            Kind::Symlink => b.link(&e.path, item.target.as_deref().unwrap())?,
        }
    }
    b.finish(listing.root_mode)
}

#[test]
fn walk_and_restore_round_trip_with_masked_modes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let src = d.join("src");
    fs::create_dir_all(src.join("a/empty")).unwrap();
    fs::write(src.join("a/x.bin"), [1u8, 2, 3]).unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("a"), fs::Permissions::from_mode(0o1555)).unwrap();
    symlink("../run.sh", src.join("a/up")).unwrap();
    let before = snapshot(&src);
    assert_eq!(before["run.sh"].1, 0o755, "set-ID bits are not listed");
    copy(&src, &d.join("out"), false).unwrap();
    assert_eq!(snapshot(&d.join("out")), before);
    assert_eq!(
        fs::metadata(d.join("out/run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(names(d), ["out", "src"]);
    for p in ["src/a", "out/a"] {
        fs::set_permissions(d.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn destinations_and_failures() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let src = d.join("src");
    fs::create_dir_all(src.join("ro")).unwrap();
    fs::write(src.join("ro/f"), "x").unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();

    // A directory with something in it: refused, with or without force.
    for force in [false, true] {
        let e = copy(&src, &src, force).unwrap_err();
        assert!(matches!(e, Error::NotEmpty { .. }), "{e}");
    }
    // A file: only with force.
    fs::write(d.join("file"), "old").unwrap();
    let e = copy(&src, &d.join("file"), false).unwrap_err();
    assert!(matches!(e, Error::Exists { .. }), "{e}");
    copy(&src, &d.join("file"), true).unwrap();
    assert_eq!(fs::read(d.join("file/ro/f")).unwrap(), b"x");

    // A restore that fails after its folders were made read-only, or
    // halfway, leaves nothing beside its destination.
    let mut b = DirBuilder::create(&d.join("half"), false, false).unwrap();
    b.dir("ro", 0o555).unwrap();
    b.file("ro/f", 0o644, b"x").unwrap();
    b.link("l", "ro/../..").unwrap_err();
    let e = b.link("ro/f/x", "y").unwrap_err();
    assert!(e.to_string().contains("before its folder \"ro/f\""), "{e}");
    b.link("up", ".").unwrap();
    b.link("out", "up/up/..").unwrap();
    let e = b.finish(0o755).unwrap_err();
    assert!(
        e.to_string()
            .contains("out is a symbolic link to \"up/up/..\", which leads outside"),
        "{e}"
    );
    assert_eq!(names(d), ["file", "src"]);
    for p in ["src/ro", "file/ro"] {
        fs::set_permissions(d.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
