//! The status page at `/`, rendered by a real browser: headless Chromium (Debian's
//! `chromium`) loads it from node 0 of a 3-node mesh, runs its script (which fetches
//! `/v1/status`), and the DOM it dumps shows the node id and the peer count 2. A
//! screenshot is saved as `target/artifacts/status-page.png` for a person to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testing::{Mesh, poll_until_ok};

/// Bound on one Chromium run (it starts slowly on a busy 2-core machine).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs headless Chromium on `url` with `extra` arguments, bounded; returns stdout.
fn chromium(url: &str, profile: &Path, extra: &[String]) -> String {
    let started = Instant::now();
    let out = Command::new("timeout")
        .arg(CHROMIUM_TIMEOUT.as_secs().to_string())
        .args([
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            // This machine's network is closed: without these, Chromium's own background
            // connections are refused many at a time and every start looks up Google's
            // hosts in vain.
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium (scripts/install-test-deps.sh installs it)");
    println!("chromium {extra:?} took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "chromium {extra:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_status_page_shows_the_node_and_its_peers_in_chromium() {
    let mut mesh = Mesh::start(3, |_, _| {}).unwrap();
    mesh.wait_ready(Duration::from_secs(20)).unwrap();
    let node = &mut mesh.nodes[0];
    let id = node.node_id().unwrap().to_string();
    poll_until_ok(
        "node 0 connected to both others",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || Ok((node.status()?["peers"] == 2).then_some(())),
    )
    .unwrap();
    let url = format!("http://{}/", node.http());
    let page = node.get("/").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "external assets"
    );

    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(&url, profile.path(), &["--dump-dom".into()]);
    assert!(
        dom.contains(&format!("<span id=\"node-id\">{id}</span>")),
        "node id not shown: {dom}"
    );
    assert!(
        dom.contains("<div class=\"big\" id=\"peers\">2</div>"),
        "peer count 2 not shown: {dom}"
    );
    assert!(
        dom.contains("<div id=\"error\"></div>"),
        "fetch failed: {dom}"
    );

    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,800".into(),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("screenshot: {}", shot.display());
}
