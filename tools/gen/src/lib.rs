//! lmc-gen: real training-checkpoint series for lmc's benchmarks.
//!
//! Two series, each written as BF16 weights, fp32 master weights and AdamW
//! state every few steps (see [`train`] for the layout):
//!
//! - [`series::pretrain`]: a byte-level GPT of a few million parameters
//!   ([`gpt`]) trained from scratch;
//! - [`series::finetune`]: MiniLM-L6 ([`bert`]) fine-tuned from its
//!   pretrained weights with masked-language modelling.
//!
//! Both train on real English text found on the machine ([`corpus`]), with
//! our own AdamW ([`adamw`]) so the optimizer state can be saved, and both
//! are deterministic for a given seed ([`rng`]).

#![forbid(unsafe_code)]

pub mod adamw;
pub mod bert;
pub mod corpus;
pub mod gpt;
pub mod nn;
pub mod params;
pub mod rng;
pub mod series;
pub mod snapshot;
pub mod train;
pub mod wordpiece;
