//! `receipt-cli`: the guided demo (`demo`) on an embedded server.

mod demo;
mod device;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "receipt-cli", about = "Message receipts for HarmonyOS chat apps: demo and tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk through every receipt of the guide on an embedded server (127.0.0.1, free port,
    /// temporary data directory) and print a transcript.
    Demo {
        /// Print without colours.
        #[arg(long)]
        plain: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Demo { plain } => match demo::run(!plain && std::env::var_os("NO_COLOR").is_none()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("demo failed: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
