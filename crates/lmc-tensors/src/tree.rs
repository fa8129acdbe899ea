//! lmc's directory stream: a whole directory as one original file.
//!
//! `lmc compress DIR` compresses this stream; its layout puts each file's
//! own layout (tensors found by [`crate::detect`]) after the file's entry
//! header, so a directory of checkpoints compresses as well as its files
//! one by one. FORMAT.md's appendix "Directory streams" is the normative
//! description; in short, all integers little-endian:
//!
//! ```text
//! stream header (16 bytes): magic "\x89LMCDIR\n" | u16 version = 1 | u16 flags = 0 | u32 root mode
//! entry header (16 bytes + path): u8 type | u8 format | u16 path_len | u32 mode | u64 len | path
//!     type 1 file: then `len` bytes of contents
//!     type 2 directory: len = 0
//!     type 3 symbolic link: then `len` bytes of target
//!     type 0 end: every field 0; nothing may follow
//! ```
//!
//! [`Reader`] checks a stream as it arrives, so that a hostile stream cannot
//! make a restorer write outside its output: paths are relative and plain
//! (no `..`, `.`, empty components, absolute paths or NUL), each entry's
//! parent is a directory entry that came before it, no path appears twice,
//! and link targets are relative and stay inside the directory.

use std::collections::HashSet;

use crate::Error;

/// `\x89LMCDIR\n`: like the container's magic, non-ASCII first and with a
/// newline, but different from it.
pub const MAGIC: [u8; 8] = *b"\x89LMCDIR\n";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
pub const ENTRY_LEN: usize = 16;
/// Longest path or link target, in bytes (Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Permission bits kept: rwx for user, group and others. Set-id and sticky
/// bits are neither stored nor restored.
pub const MODE_MASK: u32 = 0o777;

fn bad(msg: impl Into<String>) -> Error {
    Error::Tree(msg.into())
}

/// The stream header.
pub fn header(root_mode: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(root_mode & MODE_MASK).to_le_bytes());
    h
}

/// Whether `bytes` start with a directory stream's magic.
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Reads the stream header: the root directory's mode.
pub fn parse_header(h: &[u8]) -> Result<u32, Error> {
    if h.len() < HEADER_LEN || !looks_like(h) {
        return Err(bad("it does not start with the directory stream header"));
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    let flags = u16::from_le_bytes([h[10], h[11]]);
    if version != VERSION {
        return Err(bad(format!(
            "version {version} is not one this lmc reads (1)"
        )));
    }
    if flags != 0 {
        return Err(bad(format!("unknown flags {flags:#x}")));
    }
    Ok(u32::from_le_bytes(h[12..16].try_into().unwrap()) & MODE_MASK)
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File = 1,
    Dir = 2,
    Symlink = 3,
}

/// An entry header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// [`crate::Format::code`] of a file's contents; informative only.
    pub format: u8,
    /// Permission bits ([`MODE_MASK`]).
    pub mode: u32,
    /// `/`-separated, relative to the directory.
    pub path: String,
    /// Bytes that follow: contents of a file, target of a link, 0 for a directory.
    pub len: u64,
}

impl Entry {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ENTRY_LEN + self.path.len());
        b.push(self.kind as u8);
        b.push(self.format);
        b.extend_from_slice(&(self.path.len() as u16).to_le_bytes());
        b.extend_from_slice(&(self.mode & MODE_MASK).to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(self.path.as_bytes());
        b
    }
}

/// The end entry.
pub const END: [u8; ENTRY_LEN] = [0; ENTRY_LEN];

/// The fixed part of an entry header: type, format, path length, mode, length.
type Fixed = (Kind, u8, usize, u32, u64);

/// The fixed part of an entry header: `None` for the end entry.
fn parse_fixed(b: &[u8; ENTRY_LEN]) -> Result<Option<Fixed>, Error> {
    let kind = match b[0] {
        0 if b == &END => return Ok(None),
        0 => return Err(bad("the end entry has fields that are not zero")),
        1 => Kind::File,
        2 => Kind::Dir,
        3 => Kind::Symlink,
        t => return Err(bad(format!("entry type {t} is not one this lmc knows"))),
    };
    let path_len = u16::from_le_bytes([b[2], b[3]]) as usize;
    let mode = u32::from_le_bytes(b[4..8].try_into().unwrap());
    let len = u64::from_le_bytes(b[8..16].try_into().unwrap());
    Ok(Some((kind, b[1], path_len, mode, len)))
}

/// Refuses paths that are not plain relative paths.
pub fn check_path(path: &str) -> Result<(), Error> {
    if path.len() > MAX_PATH {
        return Err(bad(format!("a path of {} bytes is too long", path.len())));
    }
    if path.is_empty()
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(format!(
            "path {path:?} is not a plain relative path (absolute, empty, '.' or '..' components)"
        )));
    }
    Ok(())
}

/// Refuses link targets that are absolute or lead outside the directory
/// from the link at `path`.
pub fn check_link(path: &str, target: &str) -> Result<(), Error> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(bad(format!(
            "link {path:?} -> {target:?}: the target is not a relative path"
        )));
    }
    let mut depth = path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return Err(bad(format!(
                "link {path:?} -> {target:?} points outside the directory"
            )));
        }
    }
    Ok(())
}

/// Receives a checked stream's contents from a [`Reader`].
pub trait Sink {
    fn dir(&mut self, e: &Entry) -> Result<(), Error>;
    fn file_start(&mut self, e: &Entry) -> Result<(), Error>;
    fn file_data(&mut self, data: &[u8]) -> Result<(), Error>;
    fn file_end(&mut self) -> Result<(), Error>;
    fn symlink(&mut self, e: &Entry, target: &str) -> Result<(), Error>;
}

/// A sink that keeps nothing (to check a stream).
pub struct NullSink;

impl Sink for NullSink {
    fn dir(&mut self, _: &Entry) -> Result<(), Error> {
        Ok(())
    }
    fn file_start(&mut self, _: &Entry) -> Result<(), Error> {
        Ok(())
    }
    fn file_data(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn file_end(&mut self) -> Result<(), Error> {
        Ok(())
    }
    fn symlink(&mut self, _: &Entry, _: &str) -> Result<(), Error> {
        Ok(())
    }
}

enum State {
    Header,
    Fixed,
    Path(Kind, u8, usize, u32, u64),
    Data(u64),
    Target(Entry),
    Done,
}

/// Checks a directory stream fed to it in pieces of any size and passes
/// its contents on to a [`Sink`].
pub struct Reader {
    state: State,
    buf: Vec<u8>,
    /// Bytes read so far (for error messages).
    offset: u64,
    pub root_mode: u32,
    dirs: HashSet<String>,
    paths: HashSet<String>,
    pub files: u64,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            state: State::Header,
            buf: Vec::new(),
            offset: 0,
            root_mode: 0,
            dirs: HashSet::new(),
            paths: HashSet::new(),
            files: 0,
        }
    }

    /// Fills `buf` up to `n` bytes from `data`; whether it is full.
    fn gather(&mut self, data: &mut &[u8], n: usize) -> bool {
        let take = (n - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        *data = &data[take..];
        self.offset += take as u64;
        self.buf.len() == n
    }

    pub fn feed(&mut self, mut data: &[u8], sink: &mut dyn Sink) -> Result<(), Error> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    if self.gather(&mut data, HEADER_LEN) {
                        self.root_mode = parse_header(&self.buf)?;
                        self.buf.clear();
                        self.state = State::Fixed;
                    }
                }
                State::Fixed => {
                    if self.gather(&mut data, ENTRY_LEN) {
                        let fixed: [u8; ENTRY_LEN] = self.buf[..].try_into().unwrap();
                        self.buf.clear();
                        self.state = match parse_fixed(&fixed)
                            .map_err(|e| at(e, self.offset - ENTRY_LEN as u64))?
                        {
                            None => State::Done,
                            Some((kind, format, path_len, mode, len)) => {
                                if path_len > MAX_PATH {
                                    return Err(bad(format!(
                                        "a path of {path_len} bytes is too long"
                                    )));
                                }
                                State::Path(kind, format, path_len, mode, len)
                            }
                        };
                    }
                }
                &mut State::Path(kind, format, n, mode, len) => {
                    if self.gather(&mut data, n) {
                        let path = String::from_utf8(std::mem::take(&mut self.buf))
                            .map_err(|_| bad("a path is not UTF-8"))?;
                        let e = Entry {
                            kind,
                            format,
                            mode: mode & MODE_MASK,
                            path,
                            len,
                        };
                        self.begin(e, sink)?;
                    }
                }
                State::Data(left) => {
                    let take = (*left).min(data.len() as u64) as usize;
                    *left -= take as u64;
                    let done = *left == 0;
                    sink.file_data(&data[..take])?;
                    data = &data[take..];
                    self.offset += take as u64;
                    if done {
                        sink.file_end()?;
                        self.state = State::Fixed;
                    }
                }
                State::Target(e) => {
                    let n = e.len as usize;
                    let e = e.clone();
                    if self.gather(&mut data, n) {
                        let target =
                            String::from_utf8(std::mem::take(&mut self.buf)).map_err(|_| {
                                bad(format!("the target of link {:?} is not UTF-8", e.path))
                            })?;
                        check_link(&e.path, &target)?;
                        sink.symlink(&e, &target)?;
                        self.state = State::Fixed;
                    }
                }
                State::Done => {
                    return Err(bad(format!(
                        "data after the end entry, at offset {}",
                        self.offset
                    )));
                }
            }
        }
        Ok(())
    }

    fn begin(&mut self, e: Entry, sink: &mut dyn Sink) -> Result<(), Error> {
        check_path(&e.path)?;
        if let Some((parent, _)) = e.path.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            return Err(bad(format!(
                "{:?} comes before its folder {parent:?} is declared",
                e.path
            )));
        }
        if !self.paths.insert(e.path.clone()) {
            return Err(bad(format!("{:?} appears twice", e.path)));
        }
        match e.kind {
            Kind::Dir => {
                if e.len != 0 {
                    return Err(bad(format!("directory {:?} has a length", e.path)));
                }
                self.dirs.insert(e.path.clone());
                sink.dir(&e)?;
                self.state = State::Fixed;
            }
            Kind::File => {
                self.files += 1;
                sink.file_start(&e)?;
                if e.len == 0 {
                    sink.file_end()?;
                    self.state = State::Fixed;
                } else {
                    self.state = State::Data(e.len);
                }
            }
            Kind::Symlink => {
                if e.len == 0 || e.len > MAX_PATH as u64 {
                    return Err(bad(format!(
                        "link {:?} has a target of {} bytes",
                        e.path, e.len
                    )));
                }
                self.state = State::Target(e);
            }
        }
        Ok(())
    }

    /// Checks that the stream ended with its end entry.
    pub fn finish(&self) -> Result<(), Error> {
        match self.state {
            State::Done => Ok(()),
            _ => Err(bad(format!(
                "the stream ends at offset {} before its end entry (truncated?)",
                self.offset
            ))),
        }
    }
}

fn at(e: Error, offset: u64) -> Error {
    match e {
        Error::Tree(m) => Error::Tree(format!("{m} (entry at offset {offset})")),
        e => e,
    }
}

/// Reads an entry header from the start of `b` (for tools that read a
/// stream's headers without its contents): the entry and its header's
/// length, or `None` for the end entry.
pub fn parse_entry(b: &[u8]) -> Result<Option<(Entry, usize)>, Error> {
    let fixed: &[u8; ENTRY_LEN] = b
        .get(..ENTRY_LEN)
        .and_then(|f| f.try_into().ok())
        .ok_or_else(|| bad("truncated entry header"))?;
    let Some((kind, format, n, mode, len)) = parse_fixed(fixed)? else {
        return Ok(None);
    };
    let path = b
        .get(ENTRY_LEN..ENTRY_LEN + n)
        .ok_or_else(|| bad("truncated entry path"))?;
    let path = String::from_utf8(path.to_vec()).map_err(|_| bad("a path is not UTF-8"))?;
    Ok(Some((
        Entry {
            kind,
            format,
            mode: mode & MODE_MASK,
            path,
            len,
        },
        ENTRY_LEN + n,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record(Vec<String>);

    impl Sink for Record {
        fn dir(&mut self, e: &Entry) -> Result<(), Error> {
            self.0.push(format!("dir {} {:o}", e.path, e.mode));
            Ok(())
        }
        fn file_start(&mut self, e: &Entry) -> Result<(), Error> {
            self.0.push(format!("file {} {:o}:", e.path, e.mode));
            Ok(())
        }
        fn file_data(&mut self, d: &[u8]) -> Result<(), Error> {
            self.0
                .last_mut()
                .unwrap()
                .push_str(&String::from_utf8_lossy(d));
            Ok(())
        }
        fn file_end(&mut self) -> Result<(), Error> {
            self.0.last_mut().unwrap().push('|');
            Ok(())
        }
        fn symlink(&mut self, e: &Entry, t: &str) -> Result<(), Error> {
            self.0.push(format!("link {} {t}", e.path));
            Ok(())
        }
    }

    fn entry(kind: Kind, path: &str, body: &[u8]) -> Vec<u8> {
        let mut b = Entry {
            kind,
            format: 0,
            mode: 0o644,
            path: path.into(),
            len: body.len() as u64,
        }
        .to_bytes();
        b.extend_from_slice(body);
        b
    }

    fn stream(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut s = header(0o755).to_vec();
        for e in entries {
            s.extend_from_slice(e);
        }
        s.extend_from_slice(&END);
        s
    }

    fn read_all(s: &[u8], piece: usize) -> Result<Vec<String>, Error> {
        let mut r = Reader::new();
        let mut sink = Record::default();
        for p in s.chunks(piece.max(1)) {
            r.feed(p, &mut sink)?;
        }
        r.finish()?;
        Ok(sink.0)
    }

    #[test]
    fn reads_in_pieces_of_any_size() {
        let s = stream(&[
            entry(Kind::File, "a.txt", b"hello"),
            entry(Kind::Dir, "d", b""),
            entry(Kind::File, "d/empty", b""),
            entry(Kind::Symlink, "d/l", b"../a.txt"),
        ]);
        let want = [
            "file a.txt 644:hello|",
            "dir d 644",
            "file d/empty 644:|",
            "link d/l ../a.txt",
        ];
        for piece in [1, 3, 16, 1000] {
            assert_eq!(read_all(&s, piece).unwrap(), want, "{piece}");
        }
        // Truncated anywhere: an error at the end, never a panic.
        for n in 0..s.len() {
            assert!(read_all(&s[..n], 7).is_err(), "{n}");
        }
        let mut extra = s.clone();
        extra.push(0);
        assert!(
            read_all(&extra, 5)
                .unwrap_err()
                .to_string()
                .contains("after the end")
        );
    }

    #[test]
    fn refuses_hostile_entries() {
        for (entries, needle) in [
            (
                vec![entry(Kind::File, "../x", b"1")],
                "not a plain relative path",
            ),
            (
                vec![entry(Kind::File, "/etc/x", b"1")],
                "not a plain relative path",
            ),
            (
                vec![entry(Kind::File, "a//b", b"1")],
                "not a plain relative path",
            ),
            (
                vec![entry(Kind::File, "./a", b"1")],
                "not a plain relative path",
            ),
            (vec![entry(Kind::File, "d/x", b"1")], "before its folder"),
            (
                vec![
                    entry(Kind::Symlink, "l", b"x"),
                    entry(Kind::File, "l/x", b"1"),
                ],
                "before its folder",
            ),
            (
                vec![entry(Kind::File, "a", b"1"), entry(Kind::File, "a", b"2")],
                "appears twice",
            ),
            (
                vec![entry(Kind::Symlink, "l", b"/etc/passwd")],
                "not a relative path",
            ),
            (vec![entry(Kind::Symlink, "l", b"../x")], "points outside"),
            (
                vec![
                    entry(Kind::Dir, "d", b""),
                    entry(Kind::Symlink, "d/l", b"a/../../.."),
                ],
                "points outside",
            ),
        ] {
            let e = read_all(&stream(&entries), 4).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let mut s = stream(&[]);
        s[8] = 2;
        assert!(
            read_all(&s, 4)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let mut s = stream(&[entry(Kind::File, "a", b"1")]);
        s[HEADER_LEN] = 9;
        assert!(read_all(&s, 4).unwrap_err().to_string().contains("type 9"));
    }
}
