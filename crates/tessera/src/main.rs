//! `tessera`: one binary, subcommands only; the logic lives in the crates.

mod benchjobs;
mod cli;
mod jobcmd;
mod query;
mod storagecmd;
mod txcmd;

use clap::Parser;

fn main() {
    tune_allocator();
    let cli = cli::Cli::parse();
    if let Err(e) = cli::dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Keeps glibc's allocator from mapping and unmapping every segment-sized
/// buffer (4 MiB bodies, pieces, encoder scratch): each such buffer used to
/// cost fresh zeroed pages and, on its free, a TLB shootdown across cores,
/// about a seventh of the S3 endpoint's CPU under a 4 MiB PUT load. Buffers
/// up to 32 MiB now come from the heap; a heap gives memory back once 64 MiB
/// sits free at its top; four arenas at most bound what freed memory the
/// threads of one process keep between them (peak RSS fell with it).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
