use std::path::{Path, PathBuf};
use std::time::Instant;

use std::fmt::Write as _;

use anyhow::{Result, bail};

use super::emit;
use super::human;
use crate::io::{ContainerInput, Output};
use crate::progress::Bar;

pub fn run(
    input: &Path,
    output: Option<PathBuf>,
    force: bool,
    base: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let mut text = String::new();
    if crate::io::is_stdio(input) && output.is_none() {
        bail!("reading standard input: give the output with -o FILE, or -c for standard output");
    }
    let dest = match output {
        Some(o) => o,
        None => match input.to_str().and_then(|s| s.strip_suffix(".lmc")) {
            Some(stem) if !stem.is_empty() => PathBuf::from(stem),
            _ => bail!(
                "cannot derive an output name from {} (it does not end in .lmc); give one with -o",
                input.display()
            ),
        },
    };
    let source = ContainerInput::open(input)?;
    let container = source
        .container()
        .map_err(crate::io::named(input))?;
    if lmc_files::is_tree(&container) {
        if let Some(b) = base {
            bail!(
                "{} holds a directory, which is never a delta; --base {} is not needed",
                input.display(),
                b.display()
            );
        }
        if crate::io::is_stdio(&dest) || crate::io::url_of(&dest).is_some() {
            bail!(
                "{} holds a directory, which cannot go to standard output or a URL; give -o DIR",
                input.display()
            );
        }
        return super::dir::restore(input, &container, &dest, force, quiet);
    }
    let base_bytes = super::load_base(input, &container, base)?;
    let container = match &base_bytes {
        Some(b) => container
            .with_base(b)
            .map_err(crate::io::named(input))?,
        None => container,
    };
    if base.is_some_and(|b| crate::io::same_file(&dest, b)) {
        bail!("output {} is the base file", dest.display());
    }
    let mut out = if crate::io::is_stdio(&dest) {
        Output::stdout(false)?
    } else if crate::io::url_of(&dest).is_some() {
        // Decoded bytes go up as they come: no seek, no spool.
        Output::remote(&dest, input, force, false)?
    } else {
        Output::create(&dest, input, force)?
    };
    let start = Instant::now();
    {
        let bar = Bar::new(container.header().original_len, "decompressing", quiet);
        source
            .decompress_to(&container, &mut out, &mut bar.callback())
            .map_err(crate::io::named(input))?;
    }
    let out_is_stdout = out.is_stdout();
    out.commit()?;
    let secs = start.elapsed().as_secs_f64();
    if !quiet {
        let n = container.header().original_len;
        writeln!(
            text,
            "{} -> {}: {} restored and verified in {:.2} s ({:.0} MB/s)",
            input.display(),
            dest.display(),
            human(n),
            secs,
            n as f64 / 1e6 / secs.max(1e-9)
        )?;
    }
    if out_is_stdout {
        eprint!("{text}");
        return Ok(());
    }
    emit(&text)
}
