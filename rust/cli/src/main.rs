//! The standalone `tokenloom` binary.

use tokenloom_core::CancelToken;

fn main() {
    let cancel = CancelToken::new();
    let handler = cancel.clone();
    // First Ctrl-C asks the job to stop cleanly; a second one exits at once.
    let _ = ctrlc::set_handler(move || {
        if handler.is_cancelled() {
            std::process::exit(tokenloom_cli::EXIT_CANCELLED);
        }
        handler.cancel();
    });
    std::process::exit(tokenloom_cli::run_stdio(std::env::args_os(), &cancel));
}
