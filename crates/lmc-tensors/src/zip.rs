//! Zip archives, read just far enough to find where each member's bytes are.
//!
//! PyTorch's `torch.save` and NumPy's `savez` write zip files (PKWARE's
//! APPNOTE.TXT, version 6.3.10). lmc never extracts a member; it only needs
//! the byte range of each member's data so that stored (uncompressed)
//! members can become tensor segments. The central directory is the
//! authority (PyTorch writes local headers with zero sizes and a data
//! descriptor after the data); each local header is read only for the
//! length of its name and extra field.
//!
//! Every field is hostile: offsets and sizes are checked against the file
//! with checked arithmetic, names must be relative paths without `..`, and
//! members may not overlap.

use crate::Error;
use lmc_core::error::quote_name;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;
const LOCAL_SIG: u32 = 0x0403_4b50;
const LOCAL_LEN: usize = 30;

/// Compression method 0: the member's bytes are stored as they are.
pub const STORED: u16 = 0;

/// One member of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// Compression method (0 stored, 8 deflate, ...).
    pub method: u16,
    /// General purpose flags; bit 0 means encrypted.
    pub flags: u16,
    /// Offset of the member's local header.
    pub header_offset: u64,
    /// Offset of the member's (possibly compressed) data.
    pub data_offset: u64,
    /// Bytes of data in the file.
    pub compressed_len: u64,
    /// Bytes once decompressed.
    pub len: u64,
}

impl Entry {
    /// Whether the member's bytes in the file are its contents.
    pub fn is_stored(&self) -> bool {
        self.method == STORED && self.flags & 1 == 0 && self.compressed_len == self.len
    }

    /// The member's bytes in `file` (compressed ones if it is compressed).
    pub fn data<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.data_offset as usize..(self.data_offset + self.compressed_len) as usize]
    }
}

/// Whether `bytes` start like a zip archive (a local header, or the end
/// record of an empty archive).
pub fn looks_like(bytes: &[u8]) -> bool {
    matches!(le32(bytes, 0), Some(LOCAL_SIG | EOCD_SIG))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Zip(msg.into())
}

/// Where the central directory is and how many entries it has.
struct Directory {
    entries: u64,
    offset: u64,
    len: u64,
}

/// Finds the end of central directory record: the last one whose comment
/// ends exactly at the end of the file. Other readers (miniz, which
/// `torch.load` uses, and Python's zipfile) take the last signature instead,
/// without checking the comment's length; an archive where the two differ
/// (a second end record hidden in the comment) would show them another
/// directory than lmc checked, so it is refused.
fn find_end(file: &[u8]) -> Result<(usize, Directory), Error> {
    let (at, dir) = find_end_by_comment(file)?;
    let last = (at + 1..=file.len() - EOCD_LEN)
        .rev()
        .find(|&p| le32(file, p) == Some(EOCD_SIG));
    if let Some(other) = last {
        return Err(bad(format!(
            "two end of central directory records (offsets {at} and {other}): readers \
             disagree on which directory the archive has"
        )));
    }
    Ok((at, dir))
}

fn find_end_by_comment(file: &[u8]) -> Result<(usize, Directory), Error> {
    if file.len() < EOCD_LEN {
        return Err(bad(format!(
            "the file is {} bytes, too short for a zip archive (truncated?)",
            file.len()
        )));
    }
    let lowest = file.len().saturating_sub(EOCD_LEN + u16::MAX as usize);
    let mut at = file.len() - EOCD_LEN;
    loop {
        if le32(file, at) == Some(EOCD_SIG)
            && le16(file, at + 20).map(|c| at + EOCD_LEN + c as usize) == Some(file.len())
        {
            let dir = Directory {
                entries: le16(file, at + 10).unwrap_or(0) as u64,
                len: le32(file, at + 12).unwrap_or(0) as u64,
                offset: le32(file, at + 16).unwrap_or(0) as u64,
            };
            return Ok((at, dir));
        }
        if at == lowest {
            return Err(bad(
                "no end of central directory record at the end of the file (truncated or not a zip archive)",
            ));
        }
        at -= 1;
    }
}

/// The central directory of a zip64 archive, from the locator just before
/// the end record.
fn zip64_directory(file: &[u8], eocd: usize) -> Result<Option<Directory>, Error> {
    let Some(loc) = eocd.checked_sub(ZIP64_LOCATOR_LEN) else {
        return Ok(None);
    };
    if le32(file, loc) != Some(ZIP64_LOCATOR_SIG) {
        return Ok(None);
    }
    let at = le64(file, loc + 8).unwrap_or(u64::MAX);
    let at = usize::try_from(at)
        .ok()
        .filter(|&a| a < loc)
        .ok_or_else(|| bad(format!("zip64 end record offset {at} is outside the file")))?;
    if le32(file, at) != Some(ZIP64_EOCD_SIG) {
        return Err(bad(format!("no zip64 end record at offset {at}")));
    }
    let field = |off| le64(file, at + off).ok_or_else(|| bad("truncated zip64 end record"));
    Ok(Some(Directory {
        entries: field(32)?,
        len: field(40)?,
        offset: field(48)?,
    }))
}

/// Reads the central directory of `file` and the local header of every
/// member. Refuses members whose names could escape a folder they were
/// extracted to (absolute, `..`, backslashes, NUL), sizes or offsets beyond
/// the file, and members that overlap.
pub fn entries(file: &[u8]) -> Result<Vec<Entry>, Error> {
    let (eocd, mut dir) = find_end(file)?;
    if let Some(d) = zip64_directory(file, eocd)? {
        dir = d;
    }
    let start = usize::try_from(dir.offset).ok();
    let end = start.and_then(|s| s.checked_add(usize::try_from(dir.len).ok()?));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(bad("central directory offset overflows"));
    };
    if end > eocd {
        return Err(bad(format!(
            "central directory ({} bytes at offset {}) runs past its end record at {eocd} (truncated?)",
            dir.len, dir.offset
        )));
    }
    if dir.entries > dir.len / CENTRAL_LEN as u64 {
        return Err(bad(format!(
            "{} entries cannot fit in a {}-byte central directory",
            dir.entries, dir.len
        )));
    }
    let mut out = Vec::with_capacity(dir.entries as usize);
    let mut at = start;
    for i in 0..dir.entries {
        let rec = file
            .get(at..end)
            .filter(|r| r.len() >= CENTRAL_LEN && le32(r, 0) == Some(CENTRAL_SIG))
            .ok_or_else(|| {
                bad(format!(
                    "central directory entry {i} at offset {at} is damaged"
                ))
            })?;
        let flags = le16(rec, 8).unwrap();
        let method = le16(rec, 10).unwrap();
        let mut compressed_len = le32(rec, 20).unwrap() as u64;
        let mut len = le32(rec, 24).unwrap() as u64;
        let name_len = le16(rec, 28).unwrap() as usize;
        let extra_len = le16(rec, 30).unwrap() as usize;
        let comment_len = le16(rec, 32).unwrap() as usize;
        let mut header_offset = le32(rec, 42).unwrap() as u64;
        let total = CENTRAL_LEN + name_len + extra_len + comment_len;
        let rec = rec.get(..total).ok_or_else(|| {
            bad(format!(
                "central directory entry {i} runs past the directory"
            ))
        })?;
        let name_bytes = &rec[CENTRAL_LEN..CENTRAL_LEN + name_len];
        let name = String::from_utf8(name_bytes.to_vec())
            .unwrap_or_else(|_| String::from_utf8_lossy(name_bytes).into_owned());
        check_name(&name)?;
        let member = |offset, detail: String| Error::ZipMember {
            member: name.clone(),
            offset,
            detail,
        };
        // Zip64 extra field: the 64-bit values of the fields set to all ones,
        // in this order.
        let mut extra = &rec[CENTRAL_LEN + name_len..CENTRAL_LEN + name_len + extra_len];
        while extra.len() >= 4 {
            let id = le16(extra, 0).unwrap();
            let n = le16(extra, 2).unwrap() as usize;
            let body = extra
                .get(4..4 + n)
                .ok_or_else(|| member(None, "extra field runs past its end".into()))?;
            if id == 1 {
                let mut k = 0;
                for field in [&mut len, &mut compressed_len, &mut header_offset] {
                    if *field == u32::MAX as u64 {
                        *field = le64(body, k)
                            .ok_or_else(|| member(None, "zip64 extra field is too short".into()))?;
                        k += 8;
                    }
                }
            }
            extra = &extra[4 + n..];
        }
        // The local header: only the lengths of its name and extra field.
        let local = usize::try_from(header_offset)
            .ok()
            .and_then(|h| file.get(h..h.checked_add(LOCAL_LEN)?))
            .filter(|l| le32(l, 0) == Some(LOCAL_SIG))
            .ok_or_else(|| member(Some(header_offset), "no local header there".into()))?;
        let local_name = le16(local, 26).unwrap() as u64;
        let local_extra = le16(local, 28).unwrap() as u64;
        let data_offset = header_offset + LOCAL_LEN as u64 + local_name + local_extra;
        let named = file
            .get(header_offset as usize + LOCAL_LEN..)
            .and_then(|r| r.get(..local_name as usize));
        if named != Some(name_bytes) {
            return Err(member(
                Some(header_offset),
                "its local header names another file".into(),
            ));
        }
        match data_offset.checked_add(compressed_len) {
            Some(e) if e <= file.len() as u64 => {}
            _ => {
                return Err(member(
                    Some(header_offset),
                    format!(
                        "{compressed_len} bytes at offset {data_offset} run past the end of the {}-byte file (absurd size, or truncated)",
                        file.len()
                    ),
                ));
            }
        }
        if method == STORED && flags & 1 == 0 && compressed_len != len {
            return Err(member(
                Some(header_offset),
                format!(
                    "stored, but its sizes differ ({compressed_len} in the file, {len} declared)"
                ),
            ));
        }
        out.push(Entry {
            name,
            method,
            flags,
            header_offset,
            data_offset,
            compressed_len,
            len,
        });
        at += total;
    }
    // Members must not share bytes: overlapping members are how zip bombs
    // make a small file expand to a huge one.
    let mut spans: Vec<(u64, u64, &str)> = out
        .iter()
        .map(|e| {
            (
                e.header_offset,
                e.data_offset + e.compressed_len,
                e.name.as_str(),
            )
        })
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::ZipMember {
                member: w[1].2.to_string(),
                offset: Some(w[1].0),
                detail: format!(
                    "overlaps member {}, which ends at offset {}",
                    quote_name(w[0].2),
                    w[0].1
                ),
            });
        }
    }
    if let Some(last) = spans.last()
        && last.1 > dir.offset
    {
        return Err(Error::ZipMember {
            member: last.2.to_string(),
            offset: Some(last.0),
            detail: format!("overlaps the central directory at offset {}", dir.offset),
        });
    }
    // miniz (torch.load) looks names up ignoring ASCII case: two names it
    // cannot tell apart would let it read another member than lmc checked.
    let mut names: Vec<(String, &str)> = out
        .iter()
        .map(|e| (e.name.to_ascii_lowercase(), e.name.as_str()))
        .collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::ZipMember {
            member: w[0].1.to_string(),
            offset: None,
            detail: if w[0].1 == w[1].1 {
                "the name of two members".into()
            } else {
                format!(
                    "the name of another member, {}, but for letter case (torch's zip reader \
                     cannot tell them apart)",
                    quote_name(w[1].1)
                )
            },
        });
    }
    Ok(out)
}

/// Refuses member names that are not plain relative paths.
fn check_name(name: &str) -> Result<(), Error> {
    let hostile = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.split('/').any(|c| c == "..");
    if hostile {
        return Err(Error::ZipMember {
            member: name.to_string(),
            offset: None,
            detail: "not a relative path inside the archive".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal zip writer for tests: stored members (or members marked as
    /// deflated with their bytes as given), no data descriptors.
    pub fn write(members: &[(&str, &[u8], u16)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data, method) in members {
            let off = out.len() as u32;
            out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0]);
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0]);
            central.extend_from_slice(&method.to_le_bytes());
            central.extend_from_slice(&[0; 8]);
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&off.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_off = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(members.len() as u16).to_le_bytes());
        out.extend_from_slice(&(members.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_off.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_members() {
        let z = write(&[("a/x", b"hello", 0), ("a/y", b"world!", 8)]);
        assert!(looks_like(&z));
        let e = entries(&z).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].data(&z), b"hello");
        assert!(e[0].is_stored());
        assert_eq!(e[1].data(&z), b"world!");
        assert!(!e[1].is_stored());
        assert!(entries(&write(&[])).unwrap().is_empty());
    }

    /// A zip64 archive (what PyTorch writes for checkpoints over 4 GiB):
    /// sizes and offsets in the central directory's zip64 extra field, the
    /// directory found through the zip64 end record and its locator.
    #[test]
    fn reads_zip64() {
        let data = b"0123456789abcdef";
        let name = b"archive/data/0";
        let mut z = Vec::new();
        z.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        z.extend_from_slice(&[45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&20u16.to_le_bytes());
        z.extend_from_slice(name);
        z.extend_from_slice(&[1, 0, 16, 0]);
        z.extend_from_slice(&(data.len() as u64).to_le_bytes());
        z.extend_from_slice(&(data.len() as u64).to_le_bytes());
        z.extend_from_slice(data);
        let cd = z.len() as u64;
        z.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
        z.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&(name.len() as u16).to_le_bytes());
        z.extend_from_slice(&28u16.to_le_bytes());
        z.extend_from_slice(&[0; 10]);
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(name);
        z.extend_from_slice(&[1, 0, 24, 0]);
        z.extend_from_slice(&(data.len() as u64).to_le_bytes());
        z.extend_from_slice(&(data.len() as u64).to_le_bytes());
        z.extend_from_slice(&0u64.to_le_bytes());
        let cd_len = z.len() as u64 - cd;
        let eocd64 = z.len() as u64;
        z.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
        z.extend_from_slice(&44u64.to_le_bytes());
        z.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z.extend_from_slice(&1u64.to_le_bytes());
        z.extend_from_slice(&1u64.to_le_bytes());
        z.extend_from_slice(&cd_len.to_le_bytes());
        z.extend_from_slice(&cd.to_le_bytes());
        z.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&eocd64.to_le_bytes());
        z.extend_from_slice(&1u32.to_le_bytes());
        z.extend_from_slice(&EOCD_SIG.to_le_bytes());
        z.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&u32::MAX.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        let e = entries(&z).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].data(&z), data);
        assert!(e[0].is_stored());
        // The locator pointing past itself.
        let mut bad = z.clone();
        let loc = bad.len() - EOCD_LEN - ZIP64_LOCATOR_LEN;
        bad[loc + 8..loc + 16].copy_from_slice(&(loc as u64 + 100).to_le_bytes());
        assert!(
            entries(&bad)
                .unwrap_err()
                .to_string()
                .contains("zip64 end record offset")
        );
    }

    #[test]
    fn refuses_hostile_archives() {
        for name in ["../evil", "a/../../b", "/etc/passwd", "a\\b", ""] {
            match entries(&write(&[(name, b"x", 0)])).unwrap_err() {
                Error::ZipMember { member, detail, .. } => {
                    assert_eq!(member, name);
                    assert!(detail.contains("not a relative path"), "{name}: {detail}");
                }
                e => panic!("{name}: {e}"),
            }
        }
        // A long hostile name is quoted by its start.
        let long = "../".repeat(20_000);
        let e = entries(&write(&[(&long, b"x", 0)]))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400 && e.contains("(60000 bytes)"), "{e}");
        // Two members of one name.
        let e = entries(&write(&[("a", b"x", 0), ("a", b"y", 0)])).unwrap_err();
        assert!(
            matches!(&e, Error::ZipMember { member, offset: None, .. } if member == "a"),
            "{e}"
        );
        // An absurd size.
        let mut z = write(&[("a", b"hello", 0)]);
        let cd = z.len() - EOCD_LEN - CENTRAL_LEN - 1;
        z[cd + 20..cd + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        z[cd + 24..cd + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        match entries(&z).unwrap_err() {
            Error::ZipMember {
                member,
                offset,
                detail,
            } => {
                assert_eq!((member.as_str(), offset), ("a", Some(0)));
                assert!(
                    detail.contains("4294967295 bytes at offset 31 run past the end"),
                    "{detail}"
                );
            }
            e => panic!("{e}"),
        }
        let mut z = write(&[("a", b"hello", 0)]);
        z[cd + 20..cd + 24].copy_from_slice(&1_000_000u32.to_le_bytes());
        z[cd + 24..cd + 28].copy_from_slice(&1_000_000u32.to_le_bytes());
        let e = entries(&z).unwrap_err().to_string();
        assert!(e.contains("run past the end"), "{e}");
        // Two members pointing at the same bytes.
        let mut z = write(&[("a", b"hello", 0), ("b", b"hello", 0)]);
        let cd2 = z.len() - EOCD_LEN - CENTRAL_LEN - 1;
        z[cd2 + 42..cd2 + 46].copy_from_slice(&0u32.to_le_bytes());
        let e = entries(&z).unwrap_err();
        assert!(
            matches!(&e, Error::ZipMember { member, offset: Some(0), .. } if member == "b"),
            "{e}"
        );
        let e = e.to_string();
        assert!(
            e.contains("names another file") || e.contains("overlap"),
            "{e}"
        );
        // Truncated anywhere.
        let z = write(&[("a", b"hello", 0)]);
        for n in 0..z.len() {
            assert!(entries(&z[..n]).is_err(), "{n}");
        }
        // More entries than fit.
        let mut z = write(&[("a", b"hello", 0)]);
        let at = z.len() - EOCD_LEN;
        z[at + 10..at + 12].copy_from_slice(&1000u16.to_le_bytes());
        assert!(entries(&z).unwrap_err().to_string().contains("cannot fit"));
    }
}
