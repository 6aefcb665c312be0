//! Two data planes on one spool folder: the second refuses to start, with
//! an error naming the folder, while the first keeps running. Runs the real
//! binary, since the lock is between processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A control-plane URL nothing answers on: a data plane keeps retrying it
/// in the background and still starts.
fn unreachable_control_plane() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn data_plane(spool: &Path, node: &str, cp: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_llmgw-dataplane"))
        .args(["--listen", "127.0.0.1:0", "--control-plane", cp])
        .args(["--ops-listen", "127.0.0.1:0"])
        .args(["--dataplane-token", "t", "--node-id", node])
        .arg("--spool-dir")
        .arg(spool)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // tracing writes its lines to stdout.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_second_data_plane_on_the_same_spool_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let cp = unreachable_control_plane();

    let mut first = Killed(data_plane(&spool, "dp-a", &cp));
    // Its spool is open (and locked) once it turns to the control plane.
    // Not once it listens: it binds its ports first, and a second data
    // plane started on that line could take the lock before it.
    let out = first.0.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let locked = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("connecting to the control plane"));
    assert!(locked, "the first data plane did not start");
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

    // The second one's exit is awaited, not polled: a thread reads its log
    // to the end, which comes when the process exits (so it never blocks
    // on a full pipe). The bound is generous since CI runs this beside the
    // end-to-end suites.
    let mut second = data_plane(&spool, "dp-b", &cp);
    let mut out = second.stdout.take().unwrap();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut err = String::new();
        let _ = done_tx.send(out.read_to_string(&mut err).map(|_| err));
    });
    let Ok(err) = done.recv_timeout(Duration::from_secs(60)) else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("the second data plane did not exit within 60 s");
    };
    let err = err.unwrap();
    let status = second.wait().unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("in use by another data plane"), "{err}");
    assert!(err.contains(&spool.display().to_string()), "{err}");

    // The first one is unaffected.
    assert!(first.0.try_wait().unwrap().is_none());
}
