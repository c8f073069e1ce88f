//! `tessera`: one binary, subcommands only; the logic lives in the crates.

mod benchjobs;
mod cli;
mod jobcmd;
mod query;
mod storagecmd;
mod txcmd;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
