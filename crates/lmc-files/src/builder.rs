//! Restoring a directory: its entries are written into a new temporary
//! directory beside the destination, checked as they come, and the
//! directory is moved into place only when complete. The one restore behind
//! `lmc decompress` of a directory container, the Python package's
//! `decompress_file` and the snapshot store's directory snapshots.
//!
//! What may be replaced ([`check_dir_destination`]): nothing without
//! `force`; with it, a file, a link or an empty directory, never a directory
//! with something in it (its contents would be lost with it), nor a device,
//! a pipe or a socket (the file rule, [`crate::check_destination`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use lmc_tensors::tree::{Index, Kind};

use crate::error::{Error, Result};
use crate::mode::set_mode;
use crate::output::folder_and_name;

/// Whether `dest` exists, after checking that a directory may be restored
/// over it: refused without `force`, and always refused when it is a
/// directory that is not empty or something other than a file or a link.
pub fn check_dir_destination(dest: &Path, force: bool) -> Result<bool> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("inspect", dest, e)),
    };
    if meta.is_dir() {
        let mut list = fs::read_dir(dest).map_err(|e| Error::io("list", dest, e))?;
        if list.next().is_some() {
            return Err(Error::NotEmpty {
                path: dest.to_path_buf(),
            });
        }
    } else if !meta.file_type().is_symlink() {
        crate::output::check_destination(dest)?;
    }
    if !force {
        return Err(Error::Exists {
            path: dest.to_path_buf(),
        });
    }
    Ok(true)
}

/// Moves the finished directory `tmp` to `dest`. An existing `dest` (a
/// file, a link or an empty directory, [`check_dir_destination`]) is replaced:
/// an empty directory by the rename itself, which fails rather than
/// replace one that is no longer empty; anything else is moved aside first
/// and put back if the rename fails.
fn place(tmp: &Path, dest: &Path, exists: bool) -> Result<()> {
    let moved = |e| Error::io("move the output into place at", dest, e);
    let is_dir = fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir());
    if !exists || is_dir {
        return fs::rename(tmp, dest).map_err(moved);
    }
    let (parent, name) = folder_and_name(dest);
    let aside = parent.join(format!(".{name}.{}.lmc-old", std::process::id()));
    fs::rename(dest, &aside).map_err(moved)?;
    if let Err(e) = fs::rename(tmp, dest) {
        let _ = fs::rename(&aside, dest);
        return Err(moved(e));
    }
    let _ = fs::remove_file(&aside);
    Ok(())
}

/// A directory being restored under a temporary name beside its
/// destination. Entries are checked as they are added (plain relative
/// paths whose folders were added before, no path twice, links kept until
/// [`DirBuilder::finish`] checked where they lead); dropped before
/// `finish`, it removes everything it wrote.
pub struct DirBuilder {
    dest: PathBuf,
    exists: bool,
    tmp: Option<tempfile::TempDir>,
    index: Index,
    /// The file being written, its path and its mode.
    file: Option<(BufWriter<File>, PathBuf, u32)>,
    /// Folders and their modes, applied last (a read-only folder must
    /// still take its contents first).
    dirs: Vec<(PathBuf, u32)>,
    links: Vec<(PathBuf, String)>,
    sync: bool,
}

impl DirBuilder {
    /// Starts a restore to `dest` ([`check_dir_destination`] says whether it
    /// may be replaced). With `sync`, every file is flushed to disk before
    /// the directory moves into place.
    pub fn create(dest: &Path, force: bool, sync: bool) -> Result<DirBuilder> {
        let exists = check_dir_destination(dest, force)?;
        let (parent, name) = folder_and_name(dest);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".lmc-tmp")
            .tempdir_in(&parent)
            .map_err(|e| Error::io("create a temporary folder in", &parent, e))?;
        Ok(DirBuilder {
            dest: dest.to_path_buf(),
            exists,
            tmp: Some(tmp),
            index: Index::new(),
            file: None,
            dirs: Vec::new(),
            links: Vec::new(),
            sync,
        })
    }

    fn root(&self) -> &Path {
        self.tmp.as_ref().expect("present until finish").path()
    }

    /// Checks an entry's path against the entries before it; where it goes.
    fn admit(&mut self, kind: Kind, path: &str, target: Option<&str>) -> Result<PathBuf> {
        if self.file.is_some() {
            self.end_file()?;
        }
        self.index
            .add(kind, path, target)
            .map_err(|e| Error::Refused {
                path: self.dest.clone(),
                source: e,
            })?;
        Ok(self.root().join(path))
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let p = self.admit(Kind::Dir, path, None)?;
        fs::create_dir(&p).map_err(|e| Error::io("create", &p, e))?;
        self.dirs.push((p, mode));
        Ok(())
    }

    /// Starts a file; its contents follow through [`DirBuilder::write`].
    pub fn begin_file(&mut self, path: &str, mode: u32) -> Result<()> {
        let p = self.admit(Kind::File, path, None)?;
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(|e| Error::io("create", &p, e))?;
        self.file = Some((BufWriter::with_capacity(1 << 20, f), p, mode));
        Ok(())
    }

    /// More of the file begun last.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some((w, p, _)) = self.file.as_mut() else {
            return Err(Error::io(
                "write",
                self.dest.clone(),
                std::io::Error::other("no file begun"),
            ));
        };
        w.write_all(data)
            .map_err(|e| Error::io("write", p.clone(), e))
    }

    /// Ends the file begun last: flushed, given its mode.
    pub fn end_file(&mut self) -> Result<()> {
        let Some((w, p, mode)) = self.file.take() else {
            return Ok(());
        };
        let f = w
            .into_inner()
            .map_err(|e| Error::io("write", &p, e.into_error()))?;
        if self.sync {
            f.sync_all().map_err(|e| Error::io("sync", &p, e))?;
        }
        drop(f);
        set_mode(&p, mode).map_err(|e| Error::io("set the mode of", &p, e))
    }

    /// A whole file at once.
    pub fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<()> {
        self.begin_file(path, mode)?;
        self.write(bytes)?;
        self.end_file()
    }

    /// A symbolic link, created by [`DirBuilder::finish`] once every link
    /// is known and checked.
    pub fn link(&mut self, path: &str, target: &str) -> Result<()> {
        let p = self.admit(Kind::Symlink, path, Some(target))?;
        self.links.push((p, target.to_string()));
        Ok(())
    }

    /// Checks where every link leads (inside the directory, following its
    /// own links), creates the links, applies the folders' modes deepest
    /// first and the directory's own `root_mode`, and moves the directory
    /// into place.
    pub fn finish(mut self, root_mode: u32) -> Result<()> {
        self.end_file()?;
        self.index.check_links().map_err(|e| Error::LinkOutside {
            path: self.dest.join(&e.link),
            target: e.target,
            reason: e.reason,
        })?;
        for (p, target) in &self.links {
            make_link(target, p).map_err(|e| Error::io("create the link", p, e))?;
        }
        // From here on a failure must make the folders writable again to
        // remove them (see Drop).
        for (p, mode) in self.dirs.iter().rev() {
            set_mode(p, *mode).map_err(|e| Error::io("set the mode of", p, e))?;
        }
        let root = self.root().to_path_buf();
        set_mode(&root, root_mode).map_err(|e| Error::io("set the mode of", &root, e))?;
        if self.sync {
            sync_dir(&root)?;
        }
        place(&root, &self.dest, self.exists)?;
        // In place: nothing to remove any more.
        let _ = self.tmp.take().map(tempfile::TempDir::keep);
        if self.sync {
            let (parent, _) = folder_and_name(&self.dest);
            sync_dir(&parent)?;
        }
        Ok(())
    }
}

impl Drop for DirBuilder {
    fn drop(&mut self) {
        // A folder made read-only by `finish` would keep its contents from
        // being removed.
        if let Some(tmp) = &self.tmp {
            let _ = set_mode(tmp.path(), 0o700);
            for (p, _) in &self.dirs {
                let _ = set_mode(p, 0o700);
            }
        }
        self.file = None;
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", dir, e))
}

#[cfg(unix)]
fn make_link(target: &str, at: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(not(unix))]
fn make_link(_: &str, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "symbolic links are restored on Unix only",
    ))
}
