//! `lmc`: lossless compression of LLM checkpoints.

#![deny(unsafe_code)]

mod commands;
mod io;
mod progress;
#[cfg(unix)]
mod signals;

/// Without Unix signals: nothing to register, nothing to handle.
#[cfg(not(unix))]
mod signals {
    use std::path::Path;
    pub struct Registered;
    pub fn temp_file(_: &Path) -> Registered {
        Registered
    }
    pub fn mapped_input(_: &Path, _: *const u8, _: usize) -> Registered {
        Registered
    }
    pub fn exit_now(code: i32) -> ! {
        std::process::exit(code)
    }
    pub fn install() {}
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "lmc", version, about = "Lossless compression of LLM checkpoints", long_about = None)]
struct Cli {
    /// Worker threads (default: all cores; at most 4 per core, and 256).
    #[arg(long, short = 't', global = true)]
    threads: Option<usize>,
    /// No progress bar and no summary line.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a checkpoint (safetensors, PyTorch .pt/.bin, NumPy .npy/.npz,
    /// raw with --dtype) or a whole directory into IN.lmc.
    Compress {
        /// The checkpoint, or `-` for standard input (read whole).
        input: PathBuf,
        /// Output file (default: the input's name with .lmc appended; `-`:
        /// standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write to standard output (as `-o -`).
        #[arg(short = 'c', long = "stdout", conflicts_with = "output")]
        stdout: bool,
        /// Overwrite the output if it exists.
        #[arg(short, long)]
        force: bool,
        /// Treat the input as a flat little-endian array of this dtype
        /// (BF16, F16, F32, F64, F8_E4M3, F8_E5M2, I8..I64, U8..U64, BOOL).
        #[arg(long)]
        dtype: Option<String>,
        /// Original bytes per chunk, 4K to 4M, e.g. 256K, 1M (default 256K).
        #[arg(long, value_parser = parse_chunk_size)]
        chunk_size: Option<usize>,
        /// Store a delta against this earlier checkpoint (e.g. the previous
        /// snapshot): tensors with the same name, dtype and shape are coded
        /// as their XOR with it. Decoding then needs the same base.
        #[arg(long, value_name = "PREV")]
        base: Option<PathBuf>,
        /// Store PyTorch checkpoints whose pickle would call code that
        /// torch.load(weights_only=True) refuses (refused by default; lmc
        /// never runs a pickle).
        #[arg(long)]
        allow_pickle_calls: bool,
        /// The smallest output, at the cost of speed: rANS wherever it saves
        /// anything (decoding then runs several times slower), zstd level 9
        /// where zstd is tried, repeated strings looked for in tensors of
        /// 64K elements or more. Decoded by any lmc of the same format.
        #[arg(long)]
        best: bool,
        /// Code every tensor alone: do not store copies and roundings of
        /// another tensor (BF16 weights of fp32 masters, tied tensors) as
        /// references to it. Such files are readable by lmc from before
        /// derived tensors.
        #[arg(long)]
        no_cross_tensor: bool,
    },
    /// Restore the original file or directory from an .lmc container.
    Decompress {
        /// The container, or `-` for standard input (read whole).
        input: PathBuf,
        /// Output file (default: the input's name without .lmc; `-`:
        /// standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write to standard output (as `-o -`).
        #[arg(short = 'c', long = "stdout", conflicts_with = "output")]
        stdout: bool,
        /// Overwrite the output if it exists.
        #[arg(short, long)]
        force: bool,
        /// The base a delta container was compressed against (the original
        /// file, or a full .lmc container of it).
        #[arg(long, value_name = "PREV")]
        base: Option<PathBuf>,
    },
    /// Decode everything and check every checksum and the whole-file hash; write nothing.
    Verify {
        input: PathBuf,
        /// The base of a delta container (the original file, or a full .lmc of it).
        #[arg(long, value_name = "PREV")]
        base: Option<PathBuf>,
    },
    /// Show what a container holds: tensors, planes, codecs and ratios.
    Info {
        input: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure lmc beside general-purpose compressors on the same bytes, in memory.
    Bench(commands::bench::BenchArgs),
    /// Keep a training run's checkpoints in a store: the newest whole, each older one a delta against the one after it.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// Study a checkpoint or a series of them: entropy, zeros, change between
    /// snapshots, exponents, ratio per codec; prints a table and writes plots.
    Analyze(commands::analyze::AnalyzeArgs),
}

/// Parses sizes like `1048576`, `256K`, `4M`, `1G` (binary multiples).
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M or G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a positive size"))
}

/// [`parse_size`], then the library's chunk size limits (4 KiB to 4 MiB),
/// so a size outside them is refused before any input is read.
pub(crate) fn parse_chunk_size(s: &str) -> Result<usize, String> {
    lmc_core::check_chunk_size(parse_size(s)?).map_err(|e| match e {
        lmc_core::Error::InvalidInput(d) => d,
        e => e.to_string(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::install_ctrlc();
    signals::install();
    if let Some(n) = cli.threads
        && let Err(e) = lmc_core::check_threads(n)
    {
        let detail = match e {
            lmc_core::Error::InvalidInput(d) => d,
            other => other.to_string(),
        };
        eprintln!("lmc: error: --threads: {detail}");
        return ExitCode::from(2);
    }
    // All work runs inside the pool, so the thread that hashes and writes is
    // one of the pool's, not an extra one waking and sleeping beside it.
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.unwrap_or(0))
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lmc: error: cannot start the worker threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    pool.install(|| run(cli))
}

/// The library's options from `--chunk-size` and `--best`.
fn compress_options(chunk_size: Option<usize>, best: bool) -> lmc_core::CompressOptions {
    let options = lmc_core::CompressOptions::default().best(best);
    match chunk_size {
        Some(c) => options.chunk_size(c),
        None => options,
    }
}

fn run(cli: Cli) -> ExitCode {
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Compress {
            input,
            output,
            stdout,
            force,
            dtype,
            chunk_size,
            base,
            allow_pickle_calls,
            best,
            no_cross_tensor,
        } => commands::compress::run(
            &input,
            if stdout { Some("-".into()) } else { output },
            force,
            dtype.as_deref(),
            compress_options(chunk_size, best).cross_tensor(!no_cross_tensor),
            base.as_deref(),
            allow_pickle_calls,
            quiet,
        ),
        Command::Decompress {
            input,
            output,
            stdout,
            force,
            base,
        } => commands::decompress::run(
            &input,
            if stdout { Some("-".into()) } else { output },
            force,
            base.as_deref(),
            quiet,
        ),
        Command::Verify { input, base } => commands::verify::run(&input, base.as_deref(), quiet),
        Command::Info { input, json } => commands::info::run(&input, json),
        Command::Bench(args) => commands::bench::run(&args),
        Command::Analyze(args) => commands::analyze::run(&args),
        Command::Snapshot(cmd) => commands::snapshot::run(&cmd, quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lmc: error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, joined by `: ` as anyhow's `{:#}` does, but
/// each cause once: errors that print their source and also return it from
/// `source()` (the store's, io::Error wrappers) would otherwise repeat it.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{message, parse_size};

    #[test]
    fn causes_are_printed_once() {
        #[derive(Debug)]
        struct Wraps(std::io::Error);
        impl std::fmt::Display for Wraps {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "objects/a.lmc: {}", self.0)
            }
        }
        impl std::error::Error for Wraps {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(Wraps(io)).context("cannot restore step 1");
        assert_eq!(message(&e), "cannot restore step 1: objects/a.lmc: gone");
        let plain = anyhow::anyhow!("gone").context("a").context("b");
        assert_eq!(message(&plain), "b: a: gone");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3X").is_err());
        assert!(parse_size("M").is_err());
    }
}
