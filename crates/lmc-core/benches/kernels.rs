//! Criterion benchmarks of each kernel of the pipeline, on one chunk
//! (256 KiB, the default chunk size) of real weights, one thread.
//!
//! `cargo bench -p lmc-core --bench kernels` (add `-- huffman` to run one
//! group). The data come from MiniLM-L6 (`scripts/demo.sh` fetches it into
//! `target/testdata/minilm/`: the BF16 copy and the fp32 original) and, for
//! the XOR-delta kernels, from two consecutive snapshots of the generated
//! pretraining series (`scripts/gen-series.sh`). Set `LMC_BENCH_BF16`,
//! `LMC_BENCH_F32`, `LMC_BENCH_DELTA` (two paths, comma-separated) to use
//! other files. Without them the benchmark says so and skips the group:
//! speeds on synthetic data would be no claim about real checkpoints.
//!
//! Throughput is in bytes of the chunk (for plane kernels, of the plane).

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lmc_core::codec::{self, PlaneCodec, PlaneKind};
use lmc_core::{Dtype, Tuning, hash, huffman, planes, rans, rans32};

const CHUNK: usize = 256 << 10;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(name)
}

/// The tensor bytes of a safetensors file (everything after its header).
fn tensor_bytes(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::read(path).ok()?;
    let n = u64::from_le_bytes(f.get(..8)?.try_into().ok()?) as usize;
    f.get(8 + n..).map(|b| b.to_vec())
}

/// One chunk from the middle of the file named by `var`, or `default`.
fn chunk(var: &str, default: &str) -> Option<Vec<u8>> {
    let path = std::env::var_os(var).map_or_else(|| testdata(default), PathBuf::from);
    let Some(b) = tensor_bytes(&path) else {
        eprintln!(
            "skipping: no {} (set {var} or fetch it, see the header of benches/kernels.rs)",
            path.display()
        );
        return None;
    };
    let start = (b.len() / 2) & !7;
    b.get(start..start + CHUNK).map(|c| c.to_vec())
}

fn split(dtype: Dtype, data: &[u8]) -> Vec<Vec<u8>> {
    let mut ps = vec![Vec::new(); dtype.width()];
    planes::split(dtype, data, &mut ps);
    ps
}

fn bench_planes(c: &mut Criterion) {
    let mut g = c.benchmark_group("planes");
    g.throughput(Throughput::Bytes(CHUNK as u64));
    for (dtype, var, file) in [
        (
            Dtype::BF16,
            "LMC_BENCH_BF16",
            "testdata/minilm/model-bf16.safetensors",
        ),
        (
            Dtype::F32,
            "LMC_BENCH_F32",
            "testdata/minilm/model.safetensors",
        ),
    ] {
        let Some(data) = chunk(var, file) else {
            continue;
        };
        let mut ps = split(dtype, &data);
        g.bench_function(BenchmarkId::new("split", dtype), |b| {
            b.iter(|| planes::split(dtype, &data, &mut ps))
        });
        let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
        let mut out = vec![0u8; data.len()];
        g.bench_function(BenchmarkId::new("merge", dtype), |b| {
            b.iter(|| planes::merge(dtype, &refs, &mut out))
        });
        planes::merge(dtype, &refs, &mut out);
        assert!(out == data, "merge did not give back the {dtype} chunk");
    }
    g.finish();
}

fn bench_entropy(c: &mut Criterion) {
    let Some(data) = chunk("LMC_BENCH_BF16", "testdata/minilm/model-bf16.safetensors") else {
        return;
    };
    let ps = split(Dtype::BF16, &data);
    let (expo, mant) = (&ps[0], &ps[1]);
    let mut g = c.benchmark_group("entropy");
    g.throughput(Throughput::Bytes(expo.len() as u64));
    g.bench_function("histogram/exponent", |b| {
        b.iter(|| huffman::histogram(expo))
    });
    let hist = huffman::histogram(expo);
    let mut block = Vec::new();
    huffman::encode(expo, &hist, &mut block);
    g.bench_function("huffman-encode/exponent", |b| {
        b.iter(|| {
            block.clear();
            huffman::encode(expo, &hist, &mut block)
        })
    });
    let mut back = vec![0u8; expo.len()];
    g.bench_function("huffman-decode/exponent", |b| {
        b.iter(|| huffman::decode(&block, &mut back).unwrap())
    });
    huffman::decode(&block, &mut back).unwrap();
    assert!(&back == expo, "Huffman round trip differs");
    bench_rans32(&mut g, "exponent", expo);
    let mut out = Vec::new();
    for (name, plane) in [("exponent", expo), ("mantissa", mant)] {
        g.bench_function(BenchmarkId::new("encode_plane", name), |b| {
            b.iter(|| {
                out.clear();
                codec::encode_plane(plane, PlaneKind::Tensor, &mut out)
            })
        });
    }
    g.finish();
}

/// rANS32 encoding and decoding of `plane` (SIMD decoding where the CPU
/// has it), checked to round trip.
fn bench_rans32(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    plane: &[u8],
) {
    let hist = huffman::histogram(plane);
    let mut block = Vec::new();
    g.bench_function(BenchmarkId::new("rans32-encode", name), |b| {
        b.iter(|| {
            block.clear();
            rans32::encode(plane, &hist, &mut block)
        })
    });
    block.clear();
    rans32::encode(plane, &hist, &mut block);
    let mut back = vec![0u8; plane.len()];
    rans32::decode(&block, &mut back).unwrap();
    assert!(back == plane, "rANS32 round trip differs");
    g.bench_function(BenchmarkId::new("rans32-decode", name), |b| {
        b.iter(|| rans32::decode(&block, &mut back).unwrap())
    });
}

/// rANS and Huffman on the planes of an XOR delta between snapshots.
fn bench_delta(c: &mut Criterion) {
    let paths = std::env::var("LMC_BENCH_DELTA").unwrap_or_else(|_| {
        let s = |n| {
            testdata(&format!(
                "series/pretrain/weights-bf16/step-000{n}.safetensors"
            ))
        };
        format!("{},{}", s(300).display(), s(280).display())
    });
    let Some((new, old)) = paths.split_once(',') else {
        eprintln!("skipping: LMC_BENCH_DELTA must be two paths, comma-separated");
        return;
    };
    let (Some(new), Some(old)) = (tensor_bytes(Path::new(new)), tensor_bytes(Path::new(old)))
    else {
        eprintln!("skipping the delta kernels: no {new} or {old} (run scripts/gen-series.sh)");
        return;
    };
    let start = (new.len().min(old.len()) / 2) & !7;
    let xor: Vec<u8> = new[start..start + CHUNK]
        .iter()
        .zip(&old[start..start + CHUNK])
        .map(|(a, b)| a ^ b)
        .collect();
    let ps = split(Dtype::BF16, &xor);
    let mut g = c.benchmark_group("delta");
    g.throughput(Throughput::Bytes(ps[0].len() as u64));
    for (name, plane) in [("exponent", &ps[0]), ("mantissa", &ps[1])] {
        let hist = huffman::histogram(plane);
        let mut block = Vec::new();
        g.bench_function(BenchmarkId::new("rans-encode", name), |b| {
            b.iter(|| {
                block.clear();
                rans::encode(plane, &hist, &mut block)
            })
        });
        // Coded here too: a filter may have skipped the encode benchmark.
        block.clear();
        rans::encode(plane, &hist, &mut block);
        let mut back = vec![0u8; plane.len()];
        rans::decode(&block, &mut back).unwrap();
        assert!(&back == plane, "rANS round trip differs");
        g.bench_function(BenchmarkId::new("rans-decode", name), |b| {
            b.iter(|| rans::decode(&block, &mut back).unwrap())
        });
        bench_rans32(&mut g, name, plane);
        // Runs of zeros (codec::encode_map runs-codes any plane whose
        // most frequent byte is 0), and their decoding.
        if plane.iter().filter(|&&b| b == 0).count() * 2 >= plane.len() {
            let mut block = Vec::new();
            g.bench_function(BenchmarkId::new("runs-encode", name), |b| {
                b.iter(|| {
                    block.clear();
                    codec::encode_map(plane, &Tuning::DEFAULT, &mut block)
                })
            });
            block.clear();
            let c = codec::encode_map(plane, &Tuning::DEFAULT, &mut block);
            let mut back = vec![0u8; plane.len()];
            codec::decode_plane(c, &block, &mut back).unwrap();
            assert!(&back == plane, "runs round trip differs");
            g.bench_function(BenchmarkId::new("runs-decode", name), |b| {
                b.iter(|| codec::decode_plane(c, &block, &mut back).unwrap())
            });
        }
        let mut out = Vec::new();
        g.bench_function(BenchmarkId::new("encode_plane", name), |b| {
            b.iter(|| {
                out.clear();
                codec::encode_plane(plane, PlaneKind::Tensor, &mut out)
            })
        });
    }
    // The mantissa plane coded given the exponent plane (a split plane).
    let key = codec::split_key(&ps[0]);
    let led = |out: &mut Vec<u8>| {
        out.clear();
        codec::encode_plane_led(
            &ps[1],
            &ps[0],
            key,
            PlaneKind::Tensor,
            &Tuning::DEFAULT,
            out,
        )
    };
    let mut out = Vec::new();
    g.bench_function("encode_plane_led/mantissa", |b| b.iter(|| led(&mut out)));
    let c = led(&mut out);
    if c == PlaneCodec::Split {
        let mut back = vec![0u8; ps[1].len()];
        g.bench_function("decode_split/mantissa", |b| {
            b.iter(|| codec::decode_split(&out, &ps[0], &mut back).unwrap())
        });
        // Decoded here too: a filter may have skipped the benchmark.
        codec::decode_split(&out, &ps[0], &mut back).unwrap();
        assert!(back == ps[1], "split round trip differs");
    }
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    let Some(data) = chunk("LMC_BENCH_BF16", "testdata/minilm/model-bf16.safetensors") else {
        return;
    };
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("xxh3-64", |b| b.iter(|| hash::xxh3_64(&data)));
    g.bench_function("xxh3-128-stream", |b| {
        b.iter(|| {
            let mut h = hash::Xxh3_128::new();
            h.update(&data);
            h.digest128()
        })
    });
    g.bench_function("memcpy", |b| {
        let mut out = vec![0u8; data.len()];
        b.iter(|| out.copy_from_slice(&data))
    });
    g.finish();
}

criterion_group! {
    name = kernels;
    // Short runs: the machine this is tuned on has two cores and neighbours.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = bench_planes, bench_entropy, bench_delta, bench_hash
}
criterion_main!(kernels);
