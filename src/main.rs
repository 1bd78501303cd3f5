use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any thread exists (candle reads it once per thread): second-order
    // gradients for the WGAN-GP penalty.
    // SAFETY: single-threaded here, nothing else reads the environment yet.
    unsafe { augment::train::enable_second_order_gradients() };
    // SAFETY: as above. candle's matrix products stop re-reading /proc/cpuinfo.
    unsafe { augment::ops::fix_thread_count() };
    augment::configure_allocator();
    let cli = augment::cli::Cli::parse();
    match augment::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", augment::error::render(&err));
            augment::error::exit_code(&err)
        }
    }
}
