//! What a newcomer's policy mistakes say: a bare number where a duration goes asks for the
//! unit, `"10M"` is not ten months, no reader internals (`$__serde_spanned_private_value`)
//! in a field's name, and the example errors in docs/policy.md are the program's own words.

use cachalot::Policy;

const HEAD: &str = "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nmatch = \"GET /a\"\n";

fn error(route_line: &str) -> String {
    match Policy::parse(&format!("{HEAD}{route_line}\n"), "p.toml") {
        Ok(_) => panic!("{route_line} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn ttl(text: &str) -> std::time::Duration {
    let policy = Policy::parse(&format!("{HEAD}ttl = {text}\n"), "p.toml")
        .unwrap_or_else(|e| panic!("ttl = {text}: {e}"));
    match &policy.routes.iter().next().unwrap().action {
        cachalot::policy::route::Action::Cache(rule) => rule.ttl.longest(),
        _ => panic!("not cached"),
    }
}

#[test]
fn a_bare_number_asks_for_the_unit_and_names_the_field() {
    assert_eq!(
        error("ttl = 30"),
        "p.toml:6:7: route[0].ttl: 30 has no unit; a duration is a string with one: write \"30s\" (or \"30ms\", \"30m\", \"30h\")"
    );
    assert_eq!(
        error("ttl = 2.5"),
        "p.toml:6:7: route[0].ttl: 2.5 has no unit; a duration is a string with one, in whole units: e.g. \"500ms\", \"30s\", \"10m\""
    );
    let timeout = Policy::parse(
        "[origin]\nurl = \"http://127.0.0.1:5000\"\ntimeout = 5\n",
        "p.toml",
    )
    .err()
    .unwrap()
    .to_string();
    assert_eq!(
        timeout,
        "p.toml:3:11: origin.timeout: 5 has no unit; a duration is a string with one: write \"5s\" (or \"5ms\", \"5m\", \"5h\")"
    );
    // Any other field with a number for a string: no internals in the path.
    let name = error("ttl = \"1m\"\nname = 7");
    assert!(!name.contains("$__serde"), "{name}");
    assert!(
        name.contains("route[0].name: expected a string: write \"7\""),
        "{name}"
    );
}

#[test]
fn one_letter_months_and_years_are_refused_and_units_are_case_sensitive() {
    assert_eq!(
        error("ttl = \"10M\""),
        "p.toml:6:7: route[0].ttl: \"10M\": \"M\" would mean months; write \"m\" for minutes, or spell out \"months\" if you mean it"
    );
    assert!(error("ttl = \"1y\"").contains("\"y\" would mean years"));
    assert!(error("ttl = \"1h 10M\"").contains("\"M\" would mean months"));
    assert!(error("ttl = \"10S\"").contains("unknown time unit \"S\""));
    assert!(error("ttl = \"10H\"").contains("unknown time unit \"H\""));
    assert_eq!(ttl("\"10m\"").as_secs(), 600);
    assert_eq!(ttl("\"10 min\"").as_secs(), 600);
    assert_eq!(ttl("\"1h 30m\"").as_secs(), 5400);
    assert_eq!(ttl("\"2d\"").as_secs(), 2 * 86400);
    // Spelled out, a long TTL is taken as written.
    assert!(ttl("\"1month\"").as_secs() > 29 * 86400);
}

#[test]
fn the_policy_docs_example_errors_are_what_check_says() {
    let root = env!("CARGO_MANIFEST_DIR");
    let docs = std::fs::read_to_string(format!("{root}/docs/policy.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/config/cachalot.toml")).unwrap();
    let first_ttl = "ttl = \"10m\"";
    assert!(example.contains(first_ttl));
    for (replacement, expected_prefix) in [
        ("ttl = 30", "route[0].ttl: 30 has no unit"),
        ("ttl = \"10M\"", "route[0].ttl: \"10M\""),
    ] {
        let broken = example.replacen(first_ttl, replacement, 1);
        let said = Policy::parse(&broken, "config/cachalot.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(said.contains(expected_prefix), "{said}");
        assert!(
            docs.lines().any(|line| line == said),
            "docs/policy.md does not show this error as check prints it:\n{said}"
        );
    }
}

#[test]
fn a_verify_share_outside_zero_to_one_names_the_field_and_the_fix() {
    assert_eq!(
        error("ttl = \"1m\"\nverify = 1.5"),
        "p.toml:7:10: route[0].verify: 1.5 is not a share of hits; expected a number from 0 (off) to 1 (every hit), e.g. 0.01 for 1%"
    );
    assert_eq!(
        error("ttl = \"1m\"\nverify = \"1%\""),
        "p.toml:7:10: route[0].verify: \"1%\": write a number from 0 (off) to 1 (every hit), e.g. 0.01 for 1%"
    );
    assert_eq!(
        error("cache = false\nverify = 0.1"),
        "p.toml:7:10: route[0].verify: has no effect with cache = false"
    );
    assert_eq!(
        error("ttl = \"1m\"\n\n[verify]\nconcurrency = 0"),
        "p.toml:9:15: verify.concurrency: 0 is out of range; expected a whole number from 1 to 256 (set fraction = 0 to turn verification off)"
    );
    assert_eq!(
        error("ttl = \"1m\"\n\n[verify]\nfraction = 2"),
        "p.toml:9:12: verify.fraction: 2 is not a share of hits; expected a number from 0 (off) to 1 (every hit), e.g. 0.01 for 1%"
    );
}
