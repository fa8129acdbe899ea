//! Writes a BF16 copy of a safetensors file (every F32 tensor rounded to BF16).
//!
//! `cargo run --release -p lmc-tensors --example to_bf16 -- IN OUT`

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: to_bf16 IN.safetensors OUT.safetensors");
        std::process::exit(2);
    }
    let input = std::fs::read(&args[1]).unwrap_or_else(|e| {
        eprintln!("cannot read {}: {e}", args[1]);
        std::process::exit(1)
    });
    let out = lmc_tensors::convert::safetensors_f32_to_bf16(&input).unwrap_or_else(|e| {
        eprintln!("{}: {e}", args[1]);
        std::process::exit(1)
    });
    std::fs::write(&args[2], out).unwrap_or_else(|e| {
        eprintln!("cannot write {}: {e}", args[2]);
        std::process::exit(1)
    });
}
