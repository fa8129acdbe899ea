//! `lmc analyze`: how a checkpoint's bytes, and their compressibility,
//! look and evolve over a series of snapshots.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Arguments of `lmc analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Checkpoint files (safetensors), in training order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: &AnalyzeArgs) -> Result<()> {
    bail!(
        "lmc analyze is not implemented yet ({} files given)",
        args.files.len()
    )
}
