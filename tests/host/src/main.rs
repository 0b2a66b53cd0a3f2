//! Test host (placeholder; being written).
fn main() {}
