//! The committed fuzz corpus, replayed in `cargo test` on the stable toolchain: every input
//! in `fuzz/corpus/<target>/` goes through the same check the fuzz target runs (the modules
//! of `fuzz/src/`, included here by path), so a crash once found, kept as a corpus file,
//! stays fixed, and the seeds stay meaningful as the code changes. The fuzzer itself runs in
//! CI (`.ci/run`, "fuzz"); see PERFORMANCE.md ("Fuzzing").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/caps.rs"]
mod caps;
#[path = "../../fuzz/src/config.rs"]
mod config;
#[path = "../../fuzz/src/contacts.rs"]
mod contacts;
#[path = "../../fuzz/src/frames.rs"]
mod frames;
#[path = "../../fuzz/src/hello.rs"]
mod hello;
#[path = "../../fuzz/src/input.rs"]
mod input;
#[path = "../../fuzz/src/mailbox.rs"]
mod mailbox;
#[path = "../../fuzz/src/messages.rs"]
mod messages;
#[path = "../../fuzz/src/overlay_machine.rs"]
mod overlay_machine;
#[path = "../../fuzz/src/range.rs"]
mod range;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of the target's corpus, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{}: a handful of seed inputs expected, found {}",
        dir.display(),
        files.len()
    );
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!(
                "{target}: {} fails its check (rerun: cargo +nightly fuzz run {target} {})",
                f.display(),
                f.display()
            );
        }
    }
    println!("{target}: {} inputs replayed", files.len());
}

/// One test per target, replaying its corpus, and the list of targets replayed.
macro_rules! replays {
    ($($target:ident => $check:path),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), $check);
            }
        )*
        const REPLAYED: &[&str] = &[$(stringify!($target)),*];
    };
}

replays! {
    decode => frames::run,
    dht_messages => messages::run_dht,
    object_messages => messages::run_object,
    mailbox_messages => mailbox::run,
    hello => hello::run,
    range_header => range::run,
    cap_token => caps::run,
    config_toml => config::run,
    contacts_file => contacts::run,
    overlay_machine => overlay_machine::run,
}

#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    targets.sort();
    for t in &targets {
        assert!(
            REPLAYED.contains(&t.as_str()),
            "fuzz target {t} has no replay test here"
        );
        assert!(corpus_dir(t).is_dir(), "fuzz target {t} has no corpus");
    }
    assert_eq!(
        targets.len(),
        REPLAYED.len(),
        "replayed {REPLAYED:?}, targets {targets:?}"
    );
}
