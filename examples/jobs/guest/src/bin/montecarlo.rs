//! Estimates pi by sampling points in the unit square with a seeded
//! generator (xorshift64*), so the same arguments give the same answer.
//!
//! Usage: montecarlo [SAMPLES] [SEED]   (defaults 1000000 and 42)

fn main() {
    let mut args = std::env::args().skip(1);
    let samples: u64 = args.next().map(|s| s.parse().expect("SAMPLES must be a number")).unwrap_or(1_000_000);
    let mut state: u64 = args.next().map(|s| s.parse().expect("SEED must be a number")).unwrap_or(42).max(1);
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut inside = 0u64;
    for _ in 0..samples {
        let (x, y) = (next(), next());
        if x * x + y * y <= 1.0 {
            inside += 1;
        }
    }
    let pi = 4.0 * inside as f64 / samples as f64;
    println!("samples {samples}");
    println!("inside {inside}");
    println!("pi {pi:.6}");
}
