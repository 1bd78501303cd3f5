use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = augment::cli::Cli::parse();
    match augment::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", augment::error::render(&err));
            augment::error::exit_code(&err)
        }
    }
}
