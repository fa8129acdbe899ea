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
//! (no `..`, `.`, empty components, absolute paths, backslashes or NUL),
//! each entry's parent is a directory entry that came before it, no path
//! appears twice, and link targets are relative and stay inside the
//! directory, both as written and as the operating system resolves them,
//! following the stream's own links ([`Index::check_links`]).

use std::collections::HashMap;

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

use lmc_core::error::quote_name;

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

/// Refuses paths that are not plain relative paths: the one rule for a
/// path inside a directory that lmc stores, used by the directory stream,
/// `lmc compress DIR` and the snapshot store.
pub fn check_path(path: &str) -> Result<(), Error> {
    if path.len() > MAX_PATH {
        return Err(bad(format!("a path of {} bytes is too long", path.len())));
    }
    if path.is_empty()
        || path.contains(['\0', '\\'])
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(format!(
            "path {} is not a plain relative path (absolute, empty, '.' or '..' \
             components, a backslash or NUL)",
            quote_name(path)
        )));
    }
    Ok(())
}

/// Refuses link targets that are absolute or lead outside the directory
/// from the link at `path`.
pub fn check_link(path: &str, target: &str) -> Result<(), Error> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(bad(format!(
            "link {} -> {}: the target is not a relative path",
            quote_name(path),
            quote_name(target)
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
                "link {} -> {} points outside the directory",
                quote_name(path),
                quote_name(target)
            )));
        }
    }
    Ok(())
}

/// Most links one resolution may follow in a chain, as Linux's
/// `MAXSYMLINKS`: a deeper chain is refused, as the system would refuse to
/// follow it.
pub const MAX_LINK_HOPS: u32 = 40;

/// What a node of an [`Index`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(HashMap<String, usize>),
    File,
    Link(String),
}

/// A place reached while resolving a link: an entry, and how many
/// components past it the path goes into what the directory does not hold
/// (a dangling link, or names under a file).
#[derive(Debug, Clone, Copy)]
struct Place {
    node: usize,
    beyond: usize,
}

/// A link whose target [`Index::check_links`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRefused {
    /// The link's path in the directory.
    pub link: String,
    pub target: String,
    /// Why: "leads outside the directory (through link ...)", "is part of
    /// a loop of links", ...
    pub reason: String,
}

impl std::fmt::Display for LinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "link {} -> {} {}",
            quote_name(&self.link),
            quote_name(&self.target),
            self.reason
        )
    }
}

impl std::error::Error for LinkRefused {}

/// A link's resolution: not begun, under way (`Err`), or done.
type Memo = Option<Result<(Place, u32), ()>>;

/// Why a link's resolution was refused, and at which link.
enum Refusal {
    Outside(usize),
    /// A `..` after a name the directory does not hold: what that name
    /// will be on disk is unknown (on a case-insensitive filesystem `b` is
    /// the directory's `B`, which may hold a link to an ancestor), so where
    /// the `..` leads is unknown too.
    Unknown(usize),
    Loop(usize),
    TooDeep(usize),
}

/// The entries of a directory (a stream's, or one being listed on disk)
/// as a tree: checks that each entry's folder came before it and that no
/// path appears twice, and resolves link targets the way the operating
/// system will once the links exist.
#[derive(Debug, Clone)]
pub struct Index {
    /// Node 0 is the directory itself.
    nodes: Vec<(usize, String, Node)>,
    by_path: HashMap<String, usize>,
    links: Vec<usize>,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub fn new() -> Index {
        Index {
            nodes: vec![(0, String::new(), Node::Dir(HashMap::new()))],
            by_path: HashMap::new(),
            links: Vec::new(),
        }
    }

    /// Adds an entry (`target` for a link), after checking its path, that
    /// its folder is a directory added before and that its path is new.
    pub fn add(&mut self, kind: Kind, path: &str, target: Option<&str>) -> Result<(), Error> {
        check_path(path)?;
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => match self.by_path.get(parent) {
                Some(&p) if matches!(self.nodes[p].2, Node::Dir(_)) => (p, name),
                _ => {
                    return Err(bad(format!(
                        "{} comes before its folder {} is declared",
                        quote_name(path),
                        quote_name(parent)
                    )));
                }
            },
            None => (0, path),
        };
        if self.by_path.contains_key(path) {
            return Err(bad(format!("{} appears twice", quote_name(path))));
        }
        let node = match kind {
            Kind::Dir => Node::Dir(HashMap::new()),
            Kind::File => Node::File,
            Kind::Symlink => {
                let target = target.unwrap_or_default();
                check_link(path, target)?;
                Node::Link(target.to_string())
            }
        };
        let id = self.nodes.len();
        if kind == Kind::Symlink {
            self.links.push(id);
        }
        self.nodes.push((parent, path.to_string(), node));
        self.by_path.insert(path.to_string(), id);
        if let Node::Dir(children) = &mut self.nodes[parent].2 {
            children.insert(name.to_string(), id);
        }
        Ok(())
    }

    /// Checks that every link's target, resolved from the link's folder
    /// and following the links of this directory (the only links a fresh
    /// restore holds), stays inside the directory, in no loop and in no
    /// chain of more than [`MAX_LINK_HOPS`] links. A `..` goes to the real
    /// parent of where a link led, as the system's does, so a link to an
    /// ancestor cannot be used to climb out of the directory. A `..` after
    /// a name the directory does not hold is refused: on a case-insensitive
    /// filesystem that name may be an entry spelled otherwise (a link to an
    /// ancestor), so where it leads cannot be known here.
    pub fn check_links(&self) -> Result<(), LinkRefused> {
        let mut memo: Vec<Memo> = vec![None; self.nodes.len()];
        for &l in &self.links {
            if let Err(why) = self.resolve(l, 0, &mut memo) {
                let (path, target) = self.link(l);
                let (at, what) = match why {
                    Refusal::Outside(at) => (at, "leads outside the directory"),
                    Refusal::Unknown(at) => {
                        (at, "has a `..` after a name the directory does not hold")
                    }
                    Refusal::Loop(at) => (at, "is part of a loop of links"),
                    Refusal::TooDeep(at) => (at, "goes through more than 40 links"),
                };
                let through = if at == l {
                    String::new()
                } else {
                    let (p, t) = self.link(at);
                    format!(" (through link {} -> {})", quote_name(p), quote_name(t))
                };
                return Err(LinkRefused {
                    link: path.to_string(),
                    target: target.to_string(),
                    reason: format!("{what}{through}"),
                });
            }
        }
        Ok(())
    }

    fn link(&self, id: usize) -> (&str, &str) {
        match &self.nodes[id] {
            (_, path, Node::Link(t)) => (path, t),
            (_, path, _) => (path, ""),
        }
    }

    /// Where link `id` leads, and how many links its resolution follows
    /// (itself included; the system refuses more than [`MAX_LINK_HOPS`]).
    /// `memo[id]` is `Some(Err(()))` while it is being resolved, so a loop
    /// is seen; `depth` is how many resolutions are under way (bounded, so a
    /// long chain listed backwards cannot exhaust the stack).
    fn resolve(&self, id: usize, depth: u32, memo: &mut [Memo]) -> Result<(Place, u32), Refusal> {
        match memo[id] {
            Some(Ok(done)) => return Ok(done),
            Some(Err(())) => return Err(Refusal::Loop(id)),
            None => {}
        }
        if depth >= MAX_LINK_HOPS {
            return Err(Refusal::TooDeep(id));
        }
        memo[id] = Some(Err(()));
        let (parent, _, node) = &self.nodes[id];
        let Node::Link(target) = node else {
            unreachable!("only links are resolved")
        };
        let mut at = Place {
            node: *parent,
            beyond: 0,
        };
        let mut hops = 1u32;
        for c in target.split('/') {
            match c {
                "" | "." => {}
                // Past a name the directory does not hold (a dangling
                // link, a name under a file, or a name the filesystem may
                // match to another entry: case-insensitive, normalizing),
                // a `..` could lead anywhere.
                ".." if at.beyond > 0 => return Err(Refusal::Unknown(id)),
                ".." if at.node == 0 => return Err(Refusal::Outside(id)),
                ".." => at.node = self.nodes[at.node].0,
                name => {
                    let child = match &self.nodes[at.node].2 {
                        Node::Dir(children) if at.beyond == 0 => children.get(name).copied(),
                        _ => None,
                    };
                    at = match child {
                        None => Place {
                            node: at.node,
                            beyond: at.beyond + 1,
                        },
                        Some(c) if matches!(self.nodes[c].2, Node::Link(_)) => {
                            let (place, n) = self.resolve(c, depth + 1, memo)?;
                            hops = hops.saturating_add(n);
                            if hops > MAX_LINK_HOPS {
                                return Err(Refusal::TooDeep(id));
                            }
                            place
                        }
                        Some(c) => Place { node: c, beyond: 0 },
                    };
                }
            }
        }
        memo[id] = Some(Ok((at, hops)));
        Ok((at, hops))
    }
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
    index: Index,
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
            index: Index::new(),
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
                                bad(format!(
                                    "the target of link {} is not UTF-8",
                                    quote_name(&e.path)
                                ))
                            })?;
                        self.index.add(Kind::Symlink, &e.path, Some(&target))?;
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
        if e.kind != Kind::Symlink {
            self.index.add(e.kind, &e.path, None)?;
        } else {
            // Added with its target, once that is read.
            check_path(&e.path)?;
        }
        match e.kind {
            Kind::Dir => {
                if e.len != 0 {
                    return Err(bad(format!(
                        "directory {} has a length",
                        quote_name(&e.path)
                    )));
                }
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
                        "link {} has a target of {} bytes",
                        quote_name(&e.path),
                        e.len
                    )));
                }
                self.state = State::Target(e);
            }
        }
        Ok(())
    }

    /// Checks that the stream ended with its end entry and that its links,
    /// resolved against the whole directory, stay inside it
    /// ([`Index::check_links`]). A restorer creates links only after this.
    pub fn finish(&self) -> Result<(), Error> {
        match self.state {
            State::Done => self.index.check_links().map_err(|e| bad(e.to_string())),
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

    /// `d1/.../d12` with a link `up` to three folders above it.
    fn deep_with_up() -> (Vec<Vec<u8>>, String) {
        let mut entries = Vec::new();
        let mut path = String::new();
        for i in 1..=12 {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&format!("d{i}"));
            entries.push(entry(Kind::Dir, &path, b""));
        }
        entries.push(entry(Kind::Symlink, &format!("{path}/up"), b"../../.."));
        (entries, path)
    }

    #[test]
    fn links_are_resolved_through_the_streams_own_links() {
        // A chain through links to ancestors: lexically inside (`up` read as
        // a folder), really 13 levels above the root.
        let (mut entries, deep) = deep_with_up();
        let target = format!("{deep}/up/{}etc/passwd", "../".repeat(13));
        entries.push(entry(Kind::Symlink, "passwd", target.as_bytes()));
        let e = read_all(&stream(&entries), 64).unwrap_err().to_string();
        assert!(
            e.contains("link \"passwd\" -> ") && e.contains("leads outside"),
            "{e}"
        );
        // The same link checked lexically alone passes: the old hole.
        assert!(check_link("passwd", &target).is_ok());

        // Refused: climbing out through a link to the root itself, links
        // through a link that leads out, loops, absolute targets.
        for (entries, needle) in [
            (
                vec![
                    entry(Kind::Symlink, "l", b"."),
                    entry(Kind::Symlink, "x", b"l/l/l/l/../.."),
                ],
                "link \"x\" -> \"l/l/l/l/../..\" leads outside",
            ),
            (
                vec![
                    entry(Kind::Dir, "a", b""),
                    entry(Kind::Dir, "a/b", b""),
                    entry(Kind::Symlink, "a/b/top", b"../.."),
                    entry(Kind::Symlink, "esc", b"a/b/top/a/b/top/../x"),
                ],
                "link \"esc\" -> \"a/b/top/a/b/top/../x\" leads outside",
            ),
            (
                vec![
                    entry(Kind::Symlink, "a", b"b"),
                    entry(Kind::Symlink, "b", b"a"),
                ],
                "loop of links",
            ),
            (vec![entry(Kind::Symlink, "a", b"a/x")], "loop of links"),
            (
                vec![
                    entry(Kind::Dir, "d", b""),
                    entry(Kind::Symlink, "d/self", b"."),
                    entry(Kind::Symlink, "later", b"d/out/x"),
                    entry(Kind::Symlink, "d/out", b"self/../.."),
                ],
                "link \"later\" -> \"d/out/x\" leads outside the directory \
                 (through link \"d/out\" -> \"self/../..\")",
            ),
        ] {
            let e = read_all(&stream(&entries), 5).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // A chain of 41 links is too deep; 39 are fine.
        for (n, ok) in [(39, true), (41, false)] {
            let mut entries = vec![entry(Kind::File, "f", b"x")];
            entries.push(entry(Kind::Symlink, "l0", b"f"));
            for i in 1..n {
                entries.push(entry(
                    Kind::Symlink,
                    &format!("l{i}"),
                    format!("l{}", i - 1).as_bytes(),
                ));
            }
            let got = read_all(&stream(&entries), 100);
            assert_eq!(got.is_ok(), ok, "{n}: {got:?}");
            // Listed the other way round: the same answer.
            entries[1..].reverse();
            assert_eq!(read_all(&stream(&entries), 100).is_ok(), ok, "{n} reversed");
        }
        // A long chain listed from its far end is refused without a deep
        // recursion.
        let mut entries: Vec<_> = (1..100_000)
            .rev()
            .map(|i| {
                entry(
                    Kind::Symlink,
                    &format!("l{i}"),
                    format!("l{}", i - 1).as_bytes(),
                )
            })
            .collect();
        entries.push(entry(Kind::File, "l0", b"x"));
        let e = read_all(&stream(&entries), 1 << 16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 40 links"), "{e}");

        // Allowed: links to ancestors that stay inside, a link through
        // a link, dangling targets inside, names under a file (with no
        // `..` after them).
        let (mut entries, deep) = deep_with_up();
        entries.push(entry(Kind::File, "f", b"x"));
        entries.push(entry(
            Kind::Symlink,
            "via",
            format!("{deep}/up/../../../../../../../../../f").as_bytes(),
        ));
        entries.push(entry(Kind::Symlink, "root", b"d1/.."));
        entries.push(entry(Kind::Symlink, "twice", b"root/root/f"));
        entries.push(entry(Kind::Symlink, "missing", b"not/yet/there"));
        entries.push(entry(Kind::Symlink, "missing_file", b"missing_file2"));
        entries.push(entry(Kind::Symlink, "x", b"missing_file"));
        entries.push(entry(Kind::Symlink, "through_dangling", b"x/y/z"));
        entries.push(entry(Kind::Symlink, "under", b"f/x"));
        entries.push(entry(Kind::Symlink, "up_then_missing", b"d1/../nothing"));
        assert!(read_all(&stream(&entries), 9).is_ok());
    }

    #[test]
    fn refuses_dotdot_after_a_name_the_stream_does_not_hold() {
        // On a case-insensitive filesystem `b` is `B`, `b/c` the link to
        // `..`, and `a` the parent of the output folder; the index sees `b`
        // as missing, so lexically `a` stayed inside.
        let entries = vec![
            entry(Kind::Dir, "B", b""),
            entry(Kind::Symlink, "B/c", b".."),
            entry(Kind::Symlink, "a", b"b/c/.."),
        ];
        let e = read_all(&stream(&entries), 7).unwrap_err().to_string();
        assert!(
            e.contains(
                "link \"a\" -> \"b/c/..\" has a `..` after a name the directory does not hold"
            ),
            "{e}"
        );
        // The same with the right case is an ordinary link to the root.
        let entries = vec![
            entry(Kind::Dir, "B", b""),
            entry(Kind::Symlink, "B/c", b".."),
            entry(Kind::Symlink, "a", b"B/c"),
        ];
        assert!(read_all(&stream(&entries), 7).is_ok());
        // A `..` after a dangling name, after a name under a file, after
        // a dangling link (followed), and through a link that does so.
        for (entries, needle) in [
            (
                vec![entry(Kind::Symlink, "m", b"not/yet/../there")],
                "link \"m\" -> \"not/yet/../there\" has a `..`",
            ),
            (
                vec![
                    entry(Kind::File, "f", b"x"),
                    entry(Kind::Symlink, "under", b"f/x/../.."),
                ],
                "link \"under\" -> \"f/x/../..\" has a `..`",
            ),
            (
                vec![
                    entry(Kind::Symlink, "x", b"missing_file"),
                    entry(Kind::Symlink, "y", b"x/.."),
                ],
                "link \"y\" -> \"x/..\" has a `..`",
            ),
            (
                vec![
                    entry(Kind::Symlink, "y", b"x/z"),
                    entry(Kind::Symlink, "x", b"b/.."),
                    entry(Kind::Dir, "B", b""),
                ],
                "link \"y\" -> \"x/z\" has a `..` after a name the directory does not \
                 hold (through link \"x\" -> \"b/..\")",
            ),
        ] {
            let e = read_all(&stream(&entries), 5).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
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
