//! An indicatif progress bar implementing [`tokenloom_core::Progress`].

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokenloom_core::{CancelToken, Progress};

const TEMPLATE: &str = "{msg:>7} [{elapsed_precise}] [{wide_bar}] {decimal_bytes}/{decimal_total_bytes} ({decimal_bytes_per_sec}, eta {eta})";

/// A byte-counting bar on stderr, one per phase; cancellation reads a
/// [`CancelToken`] (set by the Ctrl-C handler).
pub struct BarProgress {
    cancel: CancelToken,
    visible: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl BarProgress {
    /// A bar drawn on stderr when `show` and stderr is a terminal; hidden otherwise.
    pub fn new(cancel: CancelToken, show: bool) -> Self {
        Self::with_visibility(cancel, show && std::io::stderr().is_terminal())
    }

    /// A bar drawn on stderr exactly when `visible`.
    pub fn with_visibility(cancel: CancelToken, visible: bool) -> Self {
        BarProgress {
            cancel,
            visible,
            bar: Mutex::new(None),
        }
    }

    /// Whether bars are drawn.
    pub fn is_visible(&self) -> bool {
        self.visible
    }

    fn replace(&self, bar: Option<ProgressBar>) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = std::mem::replace(&mut *slot, bar) {
                old.finish_and_clear();
            }
        }
    }
}

impl std::fmt::Debug for BarProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BarProgress")
            .field("cancel", &self.cancel)
            .field("visible", &self.visible)
            .finish_non_exhaustive()
    }
}

impl Progress for BarProgress {
    fn start(&self, what: &str, total: u64) {
        if !self.visible {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        self.replace(Some(bar));
    }

    fn advance(&self, n: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn finish(&self) {
        self.replace(None);
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bar_counts_nothing_and_reads_the_token() {
        let cancel = CancelToken::new();
        let p = BarProgress::with_visibility(cancel.clone(), false);
        p.start("verify", 10);
        p.advance(5);
        p.finish();
        assert!(!p.is_visible());
        assert!(p.check().is_ok());
        cancel.cancel();
        assert!(matches!(p.check(), Err(tokenloom_core::Error::Cancelled)));
    }

    #[test]
    fn quiet_hides_the_bar() {
        assert!(!BarProgress::new(CancelToken::new(), false).is_visible());
    }
}
