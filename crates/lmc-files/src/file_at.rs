//! A local file read at offsets ([`lmc_core::ReadAt`]): what lets a reader
//! open a container by its header and index and then read only the chunks
//! it needs, as it does an object in remote storage, instead of reading
//! the whole file into memory first.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

/// A file opened for positional reads; its length is taken when opened.
#[derive(Debug)]
pub struct FileAt {
    file: File,
    len: u64,
}

impl FileAt {
    pub fn open(path: &Path) -> Result<FileAt, crate::Error> {
        let io = |action, source| crate::Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let meta = file.metadata().map_err(|e| io("stat", e))?;
        if meta.is_dir() {
            return Err(crate::Error::WrongKind {
                path: path.to_path_buf(),
                what: "a directory",
            });
        }
        Ok(FileAt {
            file,
            len: meta.len(),
        })
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        lmc_core::read_file_at(&self.file, buf, offset)
    }
}

impl lmc_core::ReadAt for FileAt {
    fn len(&self) -> u64 {
        self.len
    }

    /// Each range read whole; a file cut short since it was opened gives
    /// an `UnexpectedEof` error naming the range.
    fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|r| {
                let len = usize::try_from(r.end.saturating_sub(r.start))
                    .map_err(|_| std::io::Error::other("range too large"))?;
                let mut buf = vec![0u8; len];
                self.read_exact_at(&mut buf, r.start).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("bytes {}..{} of the file: {e}", r.start, r.end),
                    )
                })?;
                Ok(buf)
            })
            .collect()
    }
}
