//! `receipt-cli`: the guided demo (`demo`) on an embedded server, and the load tool (`bench`).

mod bench;
mod bench_cluster;
mod bench_large;
mod bench_load;
mod bench_stats;
mod demo;

use clap::{Parser, Subcommand};

/// mimalloc: the server and the load connections allocate a lot of small short-lived objects
/// across threads; glibc malloc spent a fifth of their time in malloc/free under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "receipt-cli", about = "Message receipts for HarmonyOS chat apps: demo and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the bench's arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Walk through every receipt of the guide on an embedded server (127.0.0.1, free port,
    /// temporary data directory) and print a transcript.
    Demo {
        /// Print without colours.
        #[arg(long)]
        plain: bool,
        /// Run every connection over TLS (a throwaway CA; the server requires TLS).
        #[arg(long)]
        tls: bool,
    },
    /// Load the server (embedded with a durable store, or running) and report receipts per
    /// second, round-trip latency and CPU/memory. Stops by itself.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Demo { plain, tls } => match demo::run(!plain && std::env::var_os("NO_COLOR").is_none(), tls) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("demo failed: {e}");
                1
            }
        },
        Command::Bench(args) => match bench::run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench failed: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
