//! Compiles the accelerator kernels (WGSL) to SPIR-V with naga.

pub fn main() {}
