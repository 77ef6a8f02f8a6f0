//! Benchmark helpers live in the benches.
