//! A write whose route's `invalidate` names the key RFC 9111 §4.4 already drops (a GET of the
//! same URI) lists that key once, in `explain` as in what the proxy drops and logs.

use std::process::Command;

#[test]
fn a_key_named_twice_is_listed_once() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cachalot.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["explain", "--config", example, "PUT /api/orgs/7/settings"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let keys: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("key "))
        .collect();
    assert_eq!(
        keys,
        [
            "  key       cachalot:{org:7:settings} and its variants (RFC 9111 §4.4: a GET of the same URI)"
        ],
        "{stdout}"
    );
}
