use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use lmc_core::Container;

use super::human;
use crate::io::Input;
use crate::progress::Bar;

pub fn run(input: &Path, quiet: bool) -> Result<()> {
    let bytes = Input::open(input)?;
    let container = Container::open(&bytes).with_context(|| format!("{}", input.display()))?;
    let start = Instant::now();
    {
        let bar = Bar::new(container.header().original_len, "verifying", quiet);
        container
            .verify(&mut bar.callback())
            .with_context(|| format!("{}", input.display()))?;
    }
    if !quiet {
        println!(
            "{}: OK ({} chunks, {} original, checked in {:.2} s)",
            input.display(),
            container.chunks().len(),
            human(container.header().original_len),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
