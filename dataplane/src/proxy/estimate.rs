//! Token estimates needed while a request is being handled (rules on
//! `input_tokens`, a local `count_tokens`). tiktoken's tables are built on
//! first use (see `llmgw_core::tokens`), and building one takes a noticeable
//! fraction of a second, so no request ever waits on a runtime thread for
//! it: a missing table is built on the blocking pool, and meanwhile rules
//! see the rough estimate.

use std::sync::atomic::{AtomicBool, Ordering};

use llmgw_core::tokens::{self, Encoding};
use serde_json::Value;

/// Whether a background build of each encoding has been started.
static O200K_STARTED: AtomicBool = AtomicBool::new(false);
static CL100K_STARTED: AtomicBool = AtomicBool::new(false);

/// Starts building `encoding` on the blocking pool, once per process.
pub fn load_in_background(encoding: Encoding) {
    let started = match encoding {
        Encoding::O200kBase => &O200K_STARTED,
        Encoding::Cl100kBase => &CL100K_STARTED,
    };
    if encoding.is_loaded() || started.swap(true, Ordering::AcqRel) {
        return;
    }
    let build = move || {
        let t = std::time::Instant::now();
        let ok = encoding.load().is_some();
        tracing::info!(
            encoding = encoding.name(),
            ok,
            ms = t.elapsed().as_millis() as u64,
            "tokenizer loaded"
        );
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(build);
        }
        Err(_) => build(),
    }
}

/// The input estimate for a routing rule, without waiting: exact once the
/// encoding is built, the rough estimate (and a background build) before.
pub fn input_tokens_now(model: &str, body: &Value) -> u64 {
    match tokens::try_estimate_input(model, body) {
        Ok(n) => n,
        Err(missing) => {
            load_in_background(missing);
            tokens::approximate_input(body)
        }
    }
}
