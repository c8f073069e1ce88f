//! Does nothing and exits 0: measures the market path, not the work.

fn main() {}
