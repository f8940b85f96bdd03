//! `leveectl`: thin entry point; the logic lives in `levee_control_plane::ctl`.

use std::process::ExitCode;

use clap::Parser;
use levee_control_plane::ctl::{self, Outcome};

fn main() -> ExitCode {
    let cli = ctl::Cli::parse();
    let failure = ExitCode::from(cli.command.failure_code());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("leveectl: cannot start: {error}");
            return failure;
        }
    };
    let mut out = std::io::stdout().lock();
    match runtime.block_on(ctl::run(cli, &mut out)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(1),
        // The reader went away (`leveectl get policies | head`): not an error.
        Err(error) if is_broken_pipe(error.as_ref()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("leveectl: {error}");
            failure
        }
    }
}

fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
