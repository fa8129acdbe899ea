use std::path::Path;
use std::time::Instant;

use std::fmt::Write as _;

use anyhow::Result;

use super::emit;
use super::human;
use crate::io::ContainerInput;
use crate::progress::Bar;

pub fn run(input: &Path, base: Option<&Path>, quiet: bool) -> Result<()> {
    let mut text = String::new();
    let source = ContainerInput::open(input)?;
    let container = source
        .container()
        .map_err(crate::io::named(input))?;
    let base_bytes = super::load_base(input, &container, base)?;
    let container = match &base_bytes {
        Some(b) => container
            .with_base(b)
            .map_err(crate::io::named(input))?,
        None => container,
    };
    let start = Instant::now();
    {
        let bar = Bar::new(container.header().original_len, "verifying", quiet);
        // A directory's stream is also checked entry by entry, as a restore would.
        if lmc_files::is_tree(&container) {
            lmc_files::check_tree(input, &container, &mut bar.callback())?;
        } else {
            source
                .decompress_to(&container, &mut std::io::sink(), &mut bar.callback())
                .map_err(crate::io::named(input))?;
        }
    }
    if !quiet {
        writeln!(
            text,
            "{}: OK ({} chunks, {} original, checked in {:.2} s)",
            input.display(),
            container.chunks().len(),
            human(container.header().original_len),
            start.elapsed().as_secs_f64()
        )?;
    }
    emit(&text)
}
