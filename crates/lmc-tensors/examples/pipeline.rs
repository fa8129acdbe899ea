//! Runs only lmc's compress or decompress of a safetensors file in memory,
//! repeatedly, for profiling (`perf record`). One thread unless RAYON_NUM_THREADS says otherwise.
//!
//! `cargo run --release -p lmc-tensors --example pipeline -- FILE compress|decompress [RUNS]`

use std::io::Cursor;
use std::time::Instant;

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS").map_or(1, |t| t.parse().expect("threads"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(run);
}

fn run() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("read input");
    let runs: usize = args.get(3).map_or(20, |r| r.parse().expect("runs"));
    let layout = lmc_tensors::safetensors::layout(&data).expect("safetensors");
    let opts = lmc_core::CompressOptions::default();
    let mut packed = Cursor::new(Vec::new());
    lmc_core::compress(&data, &layout, &opts, &mut packed, &mut |_| true).unwrap();
    let packed = packed.into_inner();
    let mut times = Vec::new();
    let mut out = vec![0u8; data.len()];
    let mut reuse = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        if args[2] == "compress" {
            // The output buffer is reused, as `lmc bench` does.
            let mut c = Cursor::new(std::mem::take(&mut reuse));
            c.get_mut().clear();
            lmc_core::compress(&data, &layout, &opts, &mut c, &mut |_| true).unwrap();
            reuse = c.into_inner();
        } else {
            let c = lmc_core::Container::open(&packed).unwrap();
            c.decompress_into(&mut out, &mut |_| true).unwrap();
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}: median {:.0} MB/s, best {:.0} MB/s",
        args[2],
        data.len() as f64 / 1e6 / times[times.len() / 2],
        data.len() as f64 / 1e6 / times[0]
    );
}
