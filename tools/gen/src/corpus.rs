//! The real text the models are trained on.
//!
//! By default the corpus is English prose that every Debian machine with
//! Python 3 has: the license texts in `/usr/share/common-licenses/` and the
//! docstrings of the Python standard library's top-level modules (found by
//! asking `python3` for its `stdlib` path, else under `/usr/lib/python3.*`
//! and `/usr/local/lib/python3.*`). `--text FILE...` replaces it with the
//! given files. Files are read in sorted order, so a machine gives the same
//! corpus every time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where the default license texts are.
pub const LICENSES_DIR: &str = "/usr/share/common-licenses";

/// Docstrings shorter than this are mostly code fragments or one-word labels.
const MIN_DOCSTRING_CHARS: usize = 40;

/// Training text and where it came from.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The documents joined with blank lines, as UTF-8 bytes.
    pub text: String,
    /// One line per source: a path, or a folder and how many files it gave.
    pub sources: Vec<String>,
}

impl Corpus {
    /// The given files, concatenated in the order given.
    pub fn from_files(files: &[PathBuf]) -> Result<Self> {
        let mut docs = Vec::new();
        for path in files {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read text file {}", path.display()))?;
            docs.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        Self::from_documents(
            docs,
            files.iter().map(|p| p.display().to_string()).collect(),
        )
    }

    /// The default corpus: license texts and Python standard-library docstrings.
    pub fn default_on_this_machine() -> Result<Self> {
        let mut docs = Vec::new();
        let mut sources = Vec::new();

        let licenses = license_files(Path::new(LICENSES_DIR));
        if !licenses.is_empty() {
            sources.push(format!("{LICENSES_DIR}/* ({} files)", licenses.len()));
        }
        for path in &licenses {
            docs.push(read_lossy(path)?);
        }

        if let Some(stdlib) = python_stdlib() {
            let modules = python_modules(&stdlib);
            let mut strings = 0;
            for path in &modules {
                for doc in docstrings(&read_lossy(path)?) {
                    docs.push(doc);
                    strings += 1;
                }
            }
            if strings > 0 {
                sources.push(format!(
                    "docstrings of {}/*.py ({} files, {strings} docstrings)",
                    stdlib.display(),
                    modules.len()
                ));
            }
        }

        if docs.is_empty() {
            bail!(
                "no training text found: neither {LICENSES_DIR}/ nor a Python 3 standard library \
                 (python3's stdlib, /usr/lib/python3.*, /usr/local/lib/python3.*) is on this \
                 machine; pass text files with --text FILE..."
            );
        }
        Self::from_documents(docs, sources)
    }

    fn from_documents(docs: Vec<String>, sources: Vec<String>) -> Result<Self> {
        let text = docs.join("\n\n");
        if text.trim().is_empty() {
            bail!("the training text is empty ({})", sources.join(", "));
        }
        Ok(Self { text, sources })
    }

    /// FNV-1a 64 of the text, printed so runs on different machines can be compared.
    pub fn fingerprint(&self) -> u64 {
        self.text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        })
    }
}

fn read_lossy(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Regular files in `dir`, sorted, each counted once (Debian's `GPL` is a link to `GPL-3`).
fn license_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    names.sort();
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect()
}

/// The standard-library folder of the `python3` on PATH, else the newest
/// `python3.*` folder under /usr/lib or /usr/local/lib.
fn python_stdlib() -> Option<PathBuf> {
    let asked = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|dir| dir.join("os.py").is_file());
    asked.or_else(|| {
        ["/usr/lib", "/usr/local/lib"].iter().find_map(|root| {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
                .ok()?
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("python3."))
                        && p.join("os.py").is_file()
                })
                .collect();
            dirs.sort_by_key(|p| python_minor(p));
            dirs.pop()
        })
    })
}

/// The minor version of a `python3.N` folder, for picking the newest.
fn python_minor(dir: &Path) -> u32 {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("python3."))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The top-level `.py` files of the standard library, sorted.
fn python_modules(stdlib: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(stdlib) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "py") && p.is_file())
        .collect();
    files.sort();
    files
}

/// The triple-quoted strings of a Python source file, each with its lines'
/// indentation removed; short ones (labels, code fragments) are left out.
pub fn docstrings(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    loop {
        let open = match (rest.find("\"\"\""), rest.find("'''")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        let quote = &rest[open..open + 3];
        let body_start = open + 3;
        let Some(len) = rest[body_start..].find(quote) else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        rest = &rest[body_start + len + 3..];
        let cleaned: Vec<&str> = body.lines().map(str::trim).collect();
        let cleaned = cleaned.join("\n").trim().to_string();
        if cleaned.len() >= MIN_DOCSTRING_CHARS && cleaned.contains(' ') {
            out.push(cleaned);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docstrings_are_found_and_dedented() {
        let src = "def f():\n    \"\"\"Return the answer to the question\n    that was asked before.\n    \"\"\"\n    x = '''no'''\n";
        assert_eq!(
            docstrings(src),
            ["Return the answer to the question\nthat was asked before."]
        );
    }

    #[test]
    fn an_unclosed_docstring_is_ignored() {
        assert!(docstrings("\"\"\"never closed, with enough words to count as prose").is_empty());
    }
}
