//! `engage-emulator`: a local stand-in for Mixpanel's /engage and /groups.

use clap::Parser;

/// A local stand-in for Mixpanel's /engage and /groups ingestion endpoints: validates and
/// answers as Mixpanel does, keeps profiles for inspection, injects faults on demand.
#[derive(Debug, Parser)]
#[command(name = "engage-emulator", version)]
struct Cli {
    #[command(flatten)]
    args: engage_emulator::EmulatorArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = engage_emulator::run_cli(&cli.args) {
        eprintln!("engage-emulator: {e}");
        std::process::exit(1);
    }
}
