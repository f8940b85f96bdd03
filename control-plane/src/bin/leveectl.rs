//! `leveectl`: thin entry point; the logic lives in `levee_control_plane::ctl`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = levee_control_plane::ctl::Cli::parse();
    let mut out = std::io::stdout().lock();
    match levee_control_plane::ctl::run(cli, &mut out) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("leveectl: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
