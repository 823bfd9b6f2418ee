//! The policy's JSON Schema (config/cachalot.schema.json), which editors use to complete and
//! check a policy as it is typed: the committed copy is what `cachalot schema` prints, every
//! policy the repo ships names it on its first line and validates against it, and the
//! schema and the parser agree on a set of accepted and refused values, so it cannot drift
//! from what `cachalot check` takes.

use cachalot::policy::{Policy, schema};
use serde_json::Value;
use std::path::{Path, PathBuf};

const SCHEMA_FILE: &str = "config/cachalot.schema.json";

/// The policies the repo ships, each of which points its editor at the schema.
const POLICIES: &[&str] = &[
    "config/cachalot.toml",
    "deploy/cachalot.compose.toml",
    "deploy/kubernetes/cachalot.toml",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&schema()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// What the schema says about a policy's text: the errors, one line each.
fn schema_errors(validator: &jsonschema::Validator, toml_text: &str) -> Vec<String> {
    let document: Value = toml::from_str(toml_text).expect("the test's TOML is TOML");
    validator
        .iter_errors(&document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schema_is_what_cachalot_schema_prints() {
    let committed = std::fs::read_to_string(repo(SCHEMA_FILE)).unwrap_or_default();
    assert!(
        committed == schema(),
        "{SCHEMA_FILE} is out of date with src/policy/file.rs; regenerate it with\n    \
         {} schema > {SCHEMA_FILE}",
        // The binary this test run built: `cargo run` would rebuild without dev features.
        env!("CARGO_BIN_EXE_cachalot")
    );
}

#[test]
fn the_schema_command_prints_the_schema() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), schema());
}

#[test]
fn every_shipped_policy_names_the_schema_and_validates_against_it() {
    let validator = validator();
    let schema_file = repo(SCHEMA_FILE).canonicalize().unwrap();
    for policy in POLICIES {
        let path = repo(policy);
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let named = first
            .strip_prefix("#:schema ")
            .unwrap_or_else(|| panic!("{policy}'s first line is not `#:schema PATH`: {first:?}"));
        // Taplo resolves the path against the policy's own directory.
        let named = path.parent().unwrap().join(named.trim());
        assert_eq!(
            named.canonicalize().ok().as_ref(),
            Some(&schema_file),
            "{policy} names {named:?}, not {SCHEMA_FILE}"
        );
        Policy::parse(&text, policy).unwrap_or_else(|e| panic!("{e}"));
        let errors = schema_errors(&validator, &text);
        assert!(errors.is_empty(), "{policy}: {errors:#?}");
    }
}

/// A policy with one route whose body is `route` (and more sections after it, if given).
fn policy_with(route: &str) -> String {
    format!(
        "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nmatch = \"GET /items/{{id}}\"\n{route}\n"
    )
}

#[test]
fn the_schema_accepts_what_the_parser_accepts() {
    let validator = validator();
    for route in [
        "ttl = \"10m\"",
        "ttl = \"1h 30m\"",
        "ttl = \"2 days\"",
        "ttl = \"500ms\"",
        "ttl = \"1.5h\"",
        "ttl = \"origin\"\nttl_max = \"1h\"\nttl_default = \"30s\"\nttl_heuristic = true",
        "ttl = \"5m\"\nttl_jitter = \"10%\"\nstale_while_revalidate = \"30s\"\nstale_if_error = \"10 min\"",
        "ttl = \"5m\"\nquery = \"ignore\"",
        "ttl = \"5m\"\nquery = [\"page\", \"sort\"]",
        "ttl = \"5m\"\nmax_object_size = 1048576",
        "ttl = \"5m\"\nmax_object_size = \"512 KiB\"",
        "ttl = \"5m\"\nmax_object_size = \"1mb\"",
        "ttl = \"5m\"\nparams.id.case = \"insensitive\"",
        "ttl = \"5m\"\nstatuses = [200, 404]\nvary = [\"Accept\"]\nupgrades = []",
        "cache = false",
        "cache = false\ntimeout = \"90s\"",
        "ttl = \"10s\"\ntimeout = \"1.5s\"\nttl_jitter = \"50%\"",
        "ttl = \"10s\"\nttl_jitter = \"0%\"",
        "ttl = \"10s\"\nttl_jitter = \"7.5%\"",
        "ttl = \"5m\"\nverify = 0.25",
        "ttl = \"5m\"\nverify = 1\n\n[verify]\nfraction = 0\nconcurrency = 256",
        "ttl = \"5m\"\n\n[l1]\nsize = \"64MiB\"\n\n[limits]\nmax_body = \"16MiB\"\nmax_headers = 50\nsend_timeout = \"1m\"",
        "ttl = \"5m\"\ncompress = false\n\n[compression]\nenabled = true\ncoding = \"br\"\nlevel = 9\nmin_size = \"1KiB\"\ntypes = [\"application/json\", \"+xml\", \"text/*\"]",
    ] {
        let text = policy_with(route);
        Policy::parse(&text, "t.toml").unwrap_or_else(|e| panic!("parser: {e}\n{text}"));
        let errors = schema_errors(&validator, &text);
        assert!(errors.is_empty(), "schema refuses\n{text}\n{errors:#?}");
    }
}

#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    let validator = validator();
    for (route, at) in [
        ("tll = \"10m\"", "/route/0"),
        ("ttl = 30", "/route/0/ttl"),
        ("ttl = \"10M\"", "/route/0/ttl"),
        ("ttl = \"10y\"", "/route/0/ttl"),
        ("ttl = \"10\"", "/route/0/ttl"),
        ("ttl = \"soon\"", "/route/0/ttl"),
        ("ttl = \"0s\"", "/route/0/ttl"),
        ("ttl = \"0m 0.0s\"", "/route/0/ttl"),
        ("ttl = \"5m\"\ntimeout = \"0ms\"", "/route/0/timeout"),
        ("ttl = \"5m\"\nttl_jitter = \"51%\"", "/route/0/ttl_jitter"),
        (
            "ttl = \"5m\"\nttl_jitter = \"50.5%\"",
            "/route/0/ttl_jitter",
        ),
        ("ttl = \"5m\"\nquery = \"all\"", "/route/0/query"),
        (
            "ttl = \"5m\"\nmax_object_size = 0",
            "/route/0/max_object_size",
        ),
        (
            "ttl = \"5m\"\nmax_object_size = \"8 parsecs\"",
            "/route/0/max_object_size",
        ),
        ("ttl = \"5m\"\nttl_jitter = \"10\"", "/route/0/ttl_jitter"),
        (
            "ttl = \"5m\"\nparams.id.case = \"lower\"",
            "/route/0/params/id/case",
        ),
        ("ttl = \"5m\"\nparams.id.fold = true", "/route/0/params/id"),
        ("ttl = \"5m\"\nper_user = \"yes\"", "/route/0/per_user"),
        ("ttl = \"5m\"\nverify = 1.5", "/route/0/verify"),
        ("ttl = \"5m\"\nverify = -0.01", "/route/0/verify"),
        ("ttl = \"5m\"\nverify = \"1%\"", "/route/0/verify"),
        (
            "ttl = \"5m\"\n\n[verify]\nconcurrency = 0",
            "/verify/concurrency",
        ),
        (
            "ttl = \"5m\"\n\n[verify]\nconcurrency = 257",
            "/verify/concurrency",
        ),
        ("ttl = \"5m\"\n\n[verify]\nshare = 0.1", "/verify"),
        (
            "ttl = \"5m\"\n\n[limits]\nmax_bodysize = \"1MiB\"",
            "/limits",
        ),
        ("ttl = \"5m\"\n\n[cache]\nttl = \"5m\"", ""),
        ("ttl = \"5m\"\ncompress = \"no\"", "/route/0/compress"),
        (
            "ttl = \"5m\"\n\n[compression]\ncoding = \"deflate\"",
            "/compression/coding",
        ),
        (
            "ttl = \"5m\"\n\n[compression]\nmin_size = 0",
            "/compression/min_size",
        ),
    ] {
        let text = policy_with(route);
        assert!(
            Policy::parse(&text, "t.toml").is_err(),
            "the parser accepts\n{text}"
        );
        let errors = schema_errors(&validator, &text);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{at}: "))),
            "the schema does not refuse {at} in\n{text}\n{errors:#?}"
        );
    }
    // Sections the parser requires.
    let errors = schema_errors(&validator, "[[route]]\nmatch = \"/x\"\ncache = false\n");
    assert!(errors.iter().any(|e| e.contains("origin")), "{errors:#?}");
    let errors = schema_errors(
        &validator,
        "[origin]\nurl = \"http://a:1\"\n[[route]]\nttl = \"5m\"\n",
    );
    assert!(errors.iter().any(|e| e.contains("match")), "{errors:#?}");
}
