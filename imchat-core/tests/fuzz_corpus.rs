//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`) through the
//! very checks the fuzz targets run, so that plain `cargo test` catches a
//! regression on any input the fuzzer once found interesting, on stable and
//! without cargo-fuzz.
//!
//! The checks live in `fuzz/src/lib.rs`; the fuzz crate is not a workspace
//! member, so instead of depending on it this test includes that file as a
//! module. A crash found by the fuzzer becomes a fixture by copying its
//! artifact into `fuzz/corpus/<target>/`.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod checks;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The function each fuzz target calls, by target name.
fn check_for(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "decode_client" => checks::decode_client,
        "decode_server" => checks::decode_server,
        "roundtrip" => checks::roundtrip,
        "split" => checks::split,
        "hub" => checks::hub,
        _ => return None,
    })
}

/// The targets `fuzz/Cargo.toml` declares (`name = "…"` lines of its `[[bin]]` tables).
fn declared_targets() -> Vec<String> {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("read fuzz/Cargo.toml");
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let (true, Some(value)) = (in_bin, line.strip_prefix("name")) {
            let name = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            targets.push(name.to_owned());
        }
    }
    targets
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read a directory entry").path())
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_fuzz_target_has_a_check_and_a_seed_corpus() {
    let targets = declared_targets();
    assert!(
        !targets.is_empty(),
        "no [[bin]] targets found in fuzz/Cargo.toml"
    );
    for target in targets {
        assert!(
            check_for(&target).is_some(),
            "fuzz target {target} has no replay check in this file"
        );
        let dir = fuzz_dir().join("corpus").join(&target);
        assert!(
            dir.is_dir() && !sorted_entries(&dir).is_empty(),
            "fuzz target {target} has no seed files in {}",
            dir.display()
        );
    }
}

#[test]
fn every_corpus_file_replays_without_a_failure() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for dir in sorted_entries(&fuzz_dir().join("corpus")) {
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let check =
            check_for(&target).unwrap_or_else(|| panic!("corpus for unknown fuzz target {target}"));
        for file in sorted_entries(&dir) {
            let bytes = fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| {
                        payload
                            .downcast_ref::<&str>()
                            .map(std::string::ToString::to_string)
                    })
                    .unwrap_or_default();
                failures.push(format!("{}: {why}", file.display()));
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus files found");
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}
