//! A plain copy between a local file and an object, through the same
//! client lmc uses (lmc-remote: object_store, its retries, 8 MiB parts, 8
//! in flight), without lmc's coding: the baseline of the object-storage
//! benchmark (scripts/bench_remote.py, docs/BENCHMARKS.md "Object storage").
//!
//!   cargo run --release -p lmc-remote --example objcopy -- put FILE URL
//!   cargo run --release -p lmc-remote --example objcopy -- get URL FILE

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::ExitCode;

fn run(args: &[String]) -> Result<u64, Box<dyn std::error::Error>> {
    match args {
        [op, file, url] if op == "put" => {
            let mut input = BufReader::with_capacity(1 << 20, File::open(file)?);
            let mut up = lmc_remote::Upload::create(url)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                up.write_all(&buf[..n])?;
            }
            let n = up.written();
            up.finish()?;
            Ok(n)
        }
        [op, url, file] if op == "get" => {
            let object = lmc_remote::Object::open(url)?;
            let mut out = BufWriter::with_capacity(1 << 20, File::create(file)?);
            let n = object.copy_to(&mut out)?;
            out.flush()?;
            Ok(n)
        }
        _ => Err("usage: objcopy put FILE URL | objcopy get URL FILE".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(n) => {
            eprintln!("objcopy: {n} bytes");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("objcopy: {e}");
            ExitCode::FAILURE
        }
    }
}
