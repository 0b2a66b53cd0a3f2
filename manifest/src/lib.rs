//! Chalkstream's pure core (placeholder; being written).
