//! The Chalkstream Spin component (placeholder; being written).
