//! Failures a user meets: bad references (exit 2), a platform the image does not have and a tag
//! the registry does not have (exit 1); always one `error:` line, never a panic, no archive.

use crate::Scratch;
use crate::env::setup;
use crate::run::Run;

#[track_caller]
fn assert_clean_failure(run: &Run, code: i32) {
    assert_eq!(run.code(), Some(code), "exit code\n{}", run.describe());
    assert!(
        run.stderr.lines().any(|l| l.starts_with("error:")),
        "an `error:` line on stderr\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "no panic\n{}",
        run.describe()
    );
    assert!(
        run.stdout.trim().is_empty() || !run.stdout.contains("Pulled "),
        "nothing pulled\n{}",
        run.describe()
    );
}

fn tar_files(scratch: &Scratch) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![scratch.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "tar") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn bad_references_exit_2_without_panic() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let out = scratch.out("out");
    let bad = [
        "UPPER/case".to_string(),
        format!("{}/small@sha256:1234", env.registry),
        format!("{}/small:bad tag", env.registry),
        format!("{}//small", env.registry),
        ":latest".to_string(),
        "small@md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
    ];
    let mut wrong = Vec::new();
    for reference in &bad {
        let run = scratch.pull(&[reference.as_str(), "-o", out.to_str().unwrap()]);
        let errors = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count();
        if run.code() != Some(2) || errors != 1 || run.stderr.contains("panicked") {
            wrong.push(format!(
                "{reference:?}: want exit 2 and one `error:` line\n{}",
                run.describe()
            ));
        }
    }
    assert!(wrong.is_empty(), "bad references:\n{}", wrong.join("\n"));
    assert!(
        tar_files(&scratch).is_empty(),
        "no archive: {:?}",
        tar_files(&scratch)
    );
}

#[test]
fn unknown_platform_exits_1_and_lists_platforms() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let archive = scratch.out("s390x.tar");
    let run = scratch.pull(&[
        &env.plain("multi"),
        "--platform",
        "linux/s390x",
        "-o",
        archive.to_str().unwrap(),
    ]);
    assert_clean_failure(&run, 1);
    let want = "linux/amd64, linux/arm64/v8, linux/arm/v7";
    assert!(
        run.stderr.contains(want),
        "the message lists the available platforms ({want}), not the attestation\n{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("unknown/unknown"),
        "attestations are not platforms\n{}",
        run.describe()
    );
    assert!(tar_files(&scratch).is_empty(), "no archive");
}

#[test]
fn missing_tag_exits_1_and_names_it() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    // An archive already at the target name survives the failed pull untouched.
    let existing = scratch.out("existing.tar");
    std::fs::write(&existing, b"an older archive").unwrap();
    let run = scratch.pull(&[
        &format!("{}:no-such-tag", env.plain("small")),
        "-o",
        existing.to_str().unwrap(),
    ]);
    assert_clean_failure(&run, 1);
    assert!(
        run.stderr.contains("no-such-tag"),
        "the message names the missing tag\n{}",
        run.describe()
    );
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"an older archive",
        "a failed pull never destroys an existing archive"
    );
    let files: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        vec!["existing.tar".to_string()],
        "no other archive (nor a temporary file) is left beside it"
    );
}

#[test]
fn missing_repository_exits_1() {
    let (_engine, env) = setup();
    let scratch = Scratch::new();
    let run = scratch.pull(&[
        &env.plain("no/such/repo"),
        "-o",
        scratch.out("x.tar").to_str().unwrap(),
    ]);
    assert_clean_failure(&run, 1);
    assert!(
        run.stderr.contains("no/such/repo"),
        "the message names the repository\n{}",
        run.describe()
    );
}
