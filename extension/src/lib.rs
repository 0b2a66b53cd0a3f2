//! The Chalkstream extension (placeholder; being written).
