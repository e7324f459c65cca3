//! The `herald` command: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    herald::cli::main(herald::cli::Cli::parse())
}
