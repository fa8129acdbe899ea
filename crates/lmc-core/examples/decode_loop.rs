//! Decodes one container in memory, over and over, on one thread: the
//! decoder alone, for `perf record` and for timing it without the file
//! system (what `lmc bench` times, less the compression).
//!
//! `cargo run --release -p lmc-core --example decode_loop -- FILE.lmc [BASE] [SECONDS]`
//! (BASE: the original bytes of a delta's base, or `-`; SECONDS defaults
//! to 3). With `RUNS=N` set it decodes exactly N times, for
//! `perf stat -e cycles:u`, which is steadier than wall time on a busy machine.

use std::time::Instant;

use lmc_core::Container;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let packed = std::fs::read(&args[1]).expect("read container");
    let base = args
        .get(2)
        .filter(|b| *b != "-")
        .map(|b| std::fs::read(b).expect("read base"));
    let runs: Option<usize> = std::env::var("RUNS").ok().map(|r| r.parse().expect("RUNS"));
    let seconds: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("seconds"));
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("one thread");
    let mut c = Container::open(&packed).expect("open");
    if let Some(b) = &base {
        c = c.with_base(b).expect("base");
    }
    let mut out = vec![0u8; c.header().original_len as usize];
    let mut times = Vec::new();
    let start = Instant::now();
    while match runs {
        Some(r) => times.len() < r,
        None => start.elapsed().as_secs_f64() < seconds || times.len() < 3,
    } {
        let s = Instant::now();
        c.decompress_into(&mut out, &mut |_| true).expect("decode");
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let mb = out.len() as f64 / 1e6;
    println!(
        "{}: {} runs, median {:.0} MB/s, best {:.0} MB/s",
        args[1],
        times.len(),
        mb / times[times.len() / 2],
        mb / times[0]
    );
}
