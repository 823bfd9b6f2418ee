use super::*;

const GOOD: &str = r#"
[listen]
addr = "127.0.0.1:8080"
admin = "127.0.0.1:9901"

[origin]
url = "http://127.0.0.1:5000"

[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
key = "credential:{id}"

[[route]]
match = "/api/auth/{*rest}"
cache = false
"#;

fn error(source: &str) -> PolicyError {
    Policy::parse(source, "p.toml").expect_err("policy should be rejected")
}

#[test]
fn parses_the_documented_example() {
    let policy = Policy::parse(GOOD, "p.toml").unwrap();
    assert_eq!(policy.routes.len(), 2);
    assert_eq!(policy.redis.prefix, "cachalot");
    assert_eq!(policy.collapse.lock_ttl, Duration::from_secs(10));
    assert!(policy.warnings.is_empty());
}

#[test]
fn bad_duration_names_file_line_and_field() {
    let err = error(&GOOD.replace("ttl = \"10m\"", "ttl = \"10 parsecs\""));
    assert_eq!(err.file, "p.toml");
    assert_eq!(err.position.unwrap().0, 12);
    assert_eq!(err.field, "route[0].ttl");
    assert!(
        err.to_string().starts_with("p.toml:12:7: route[0].ttl:"),
        "{err}"
    );
}

#[test]
fn unknown_field_is_an_error_with_its_path() {
    let err = error(&GOOD.replace("ttl = \"10m\"", "tll = \"10m\""));
    assert_eq!(err.position.unwrap().0, 12, "{err}");
    assert!(err.message.contains("unknown field `tll`"), "{err}");
    assert!(err.field.starts_with("route[0]"), "{err}");
}

#[test]
fn missing_ttl_explains_there_is_no_default() {
    let err = error(&GOOD.replace("ttl = \"10m\"\n", ""));
    assert_eq!(err.field, "route[0].ttl");
    assert!(err.message.contains("no global default"), "{err}");
}

#[test]
fn equally_specific_routes_are_rejected_whatever_their_names() {
    let extra = "\n[[route]]\nmatch = \"GET|POST /api/credentials/<cid>\"\nttl = \"1m\"\n";
    let err = error(&format!("{GOOD}{extra}"));
    assert!(err.message.contains("as specific as"), "{err}");
    assert_eq!(err.position.unwrap().0, 20, "{err}");
}

#[test]
fn int_and_plain_params_coexist() {
    let extra = "\n[[route]]\nmatch = \"GET /api/credentials/<int:n>\"\nttl = \"1m\"\n";
    Policy::parse(&format!("{GOOD}{extra}"), "p.toml").unwrap();
}

#[test]
fn cache_fields_on_a_pass_route_are_errors() {
    let err = error(&GOOD.replace("cache = false", "cache = false\nttl = \"1m\""));
    assert_eq!(err.field, "route[1].ttl");
}

#[test]
fn toml_syntax_error_has_position() {
    let err = error("[origin\nurl = 1");
    assert_eq!(err.position.unwrap().0, 1, "{err}");
}

#[test]
fn three_routes_with_one_ttl_warn() {
    let mut source = String::from("[origin]\nurl = \"http://127.0.0.1:5000\"\n");
    for path in ["/a", "/b", "/c"] {
        source.push_str(&format!(
            "[[route]]\nmatch = \"GET {path}\"\nttl = \"5m\"\n"
        ));
    }
    let policy = Policy::parse(&source, "p.toml").unwrap();
    assert_eq!(policy.warnings.len(), 1, "{:?}", policy.warnings);
}

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact("redis://user:secret@host:6379"),
        "redis://user:***@host:6379"
    );
    assert_eq!(redact("redis://host:6379"), "redis://host:6379");
}

#[test]
fn reserved_route_names_are_rejected() {
    let err = error(&GOOD.replace("name = \"credential\"", "name = \"lock\""));
    assert_eq!(err.field, "route[0].name");
    assert!(err.message.contains("reserved"), "{err}");
}

#[test]
fn the_in_process_tier_must_be_sized_before_a_route_uses_it() {
    let err = error(&GOOD.replace(
        "key = \"credential:{id}\"",
        "key = \"credential:{id}\"\nl1 = true",
    ));
    assert_eq!(err.field, "route[0].l1");
    assert!(err.message.contains("[l1] size"), "{err}");
    let sized = format!(
        "[l1]\nsize = \"32MiB\"\n{}",
        GOOD.replace(
            "key = \"credential:{id}\"",
            "key = \"credential:{id}\"\nl1 = true"
        )
    );
    assert_eq!(
        Policy::parse(&sized, "p.toml").unwrap().l1,
        Some(32 * 1024 * 1024)
    );
}

#[test]
fn limits_have_defaults_and_checked_values() {
    let policy = Policy::parse(GOOD, "p.toml").unwrap();
    assert_eq!(policy.limits, Limits::default());
    let with = |limits: &str| GOOD.replace("[origin]", &format!("[limits]\n{limits}\n\n[origin]"));
    let policy = Policy::parse(
        &with(
            "max_body = \"1MiB\"\nmax_headers = 50\nidle_timeout = \"5s\"\nsend_timeout = \"9s\"",
        ),
        "p.toml",
    )
    .unwrap();
    assert_eq!(policy.limits.max_body, 1024 * 1024);
    assert_eq!(policy.limits.max_headers, 50);
    assert_eq!(policy.limits.idle_timeout, Duration::from_secs(5));
    assert_eq!(policy.limits.send_timeout, Duration::from_secs(9));
    for (bad, field) in [
        ("max_head_size = \"1KiB\"", "limits.max_head_size"),
        ("max_headers = 0", "limits.max_headers"),
        ("max_connections = 0", "limits.max_connections"),
        ("header_timeout = \"soon\"", "limits.header_timeout"),
        ("send_timeout = \"0s\"", "limits.send_timeout"),
        ("max_bodies = 1", "limits.max_bodies"),
    ] {
        let err = error(&with(bad));
        assert_eq!(err.field, field, "{bad}: {err}");
        assert_eq!(err.position.unwrap().0, 7, "{bad}");
    }
}

#[test]
fn vary_per_user_and_max_variants_are_checked() {
    let route = |extra: &str| {
        GOOD.replace(
            "key = \"credential:{id}\"",
            &format!("key = \"credential:{{id}}\"\n{extra}"),
        )
    };
    let policy = Policy::parse(
        &route("per_user = true\nvary = [\"X-Forwarded-Host\"]\nmax_variants = 50"),
        "p.toml",
    )
    .unwrap();
    let route0 = policy
        .routes
        .iter()
        .find(|r| r.name.as_deref() == Some("credential"))
        .unwrap();
    let Action::Cache(rule) = &route0.action else {
        panic!("cached route")
    };
    assert!(rule.per_user);
    assert_eq!(rule.vary, ["x-forwarded-host"]);
    assert_eq!(rule.max_variants, 50);
    for (bad, says) in [
        ("vary = [\"Authorization\"]", "per_user"),
        ("vary = [\"Cookie\"]", "ignore_cookies"),
        ("vary = [\"Connection\"]", "hop-by-hop"),
        ("vary = [\"bad header\"]", "not a header name"),
        ("vary = [\"X-A\", \"x-a\"]", "twice"),
        ("max_variants = 0", "at least 1"),
    ] {
        let err = error(&route(bad));
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
    let pass = GOOD.replace("cache = false", "cache = false\nper_user = true");
    assert!(error(&pass).to_string().contains("no effect"));
}

/// The policy with exactly these environment variables applied.
fn with_vars(vars: &[(&str, &str)]) -> Result<Policy, PolicyError> {
    let mut policy = Policy::parse(GOOD, "p.toml").unwrap();
    let vars: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    policy
        .apply_vars(|name| vars.get(name).cloned())
        .map(|()| policy)
}

#[test]
fn the_environment_chooses_redis_url_or_the_managed_redis_variables() {
    let url = |vars: &[(&str, &str)]| with_vars(vars).unwrap().redis.url;
    assert_eq!(url(&[]), "redis://127.0.0.1:6379");
    assert_eq!(
        url(&[("REDIS_URL", "rediss://h:6380/1")]),
        "rediss://h:6380/1"
    );
    assert_eq!(
        url(&[("REDIS_HOST", "cache.example")]),
        "redis://cache.example:6379"
    );
    assert_eq!(
        url(&[("REDIS_HOST", "cache.example"), ("REDIS_SSL", "True")]),
        "rediss://cache.example:6380"
    );
    assert_eq!(
        url(&[
            ("REDIS_HOST", "h"),
            ("REDIS_SSL", "no"),
            ("REDIS_PORT", "7000")
        ]),
        "redis://h:7000"
    );
    // REDIS_URL wins over the separate settings.
    assert_eq!(
        url(&[("REDIS_URL", "redis://u:1"), ("REDIS_HOST", "h")]),
        "redis://u:1"
    );
    let port = with_vars(&[("REDIS_HOST", "h"), ("REDIS_PORT", "x")]).unwrap_err();
    assert_eq!(port.field, "REDIS_PORT");
}

#[test]
fn a_password_from_the_environment_never_prints() {
    let policy = with_vars(&[("REDIS_ACCESS_KEY", "key"), ("REDIS_PASSWORD", "pw")]).unwrap();
    let password = policy.redis.password.as_ref().unwrap();
    assert_eq!(
        password.expose(),
        "pw",
        "REDIS_PASSWORD wins over REDIS_ACCESS_KEY"
    );
    assert!(!format!("{policy:?}").contains("pw\""));
    let policy = with_vars(&[("REDIS_ACCESS_KEY", "key")]).unwrap();
    assert_eq!(policy.redis.password.unwrap().expose(), "key");
}

#[test]
fn tls_files_need_a_tls_url() {
    let source = GOOD.replace(
        "[origin]",
        "[redis]\nurl = \"redis://h:6379\"\ntls_ca_file = \"ca.pem\"\n\n[origin]",
    );
    let e = error(&source);
    assert_eq!(e.field, "redis.url");
    assert!(e.message.contains("use rediss://"), "{e}");
}

#[test]
fn param_case_rules_name_file_line_and_field() {
    let with = |params: &str| {
        format!(
            "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nname = \"user\"\nmatch = \"GET /u/{{login}}/<int:id>/{{*rest}}\"\nttl = \"1m\"\n{params}\n"
        )
    };
    let policy = Policy::parse(&with("params.login.case = \"insensitive\""), "p.toml").unwrap();
    let route = policy.routes.iter().next().unwrap();
    let path = "/u/Alice/0042/X";
    let segments = crate::http::path::segments(path);
    let params = route.pattern.matches(path, &segments).unwrap();
    let values: Vec<&str> = params.iter().map(|(_, v)| v.as_ref()).collect();
    assert_eq!(values, ["alice", "42", "X"]);
    Policy::parse(
        &with("[route.params.login]\ncase = \"sensitive\""),
        "p.toml",
    )
    .unwrap();

    for (params, line, field, says) in [
        (
            "params.nope.case = \"insensitive\"",
            8,
            "route[0].params.nope",
            "no parameter \"nope\"",
        ),
        (
            "params.login.case = \"lower\"",
            8,
            "route[0].params.login.case",
            "\"lower\" is not a case rule",
        ),
        (
            "params.id.case = \"insensitive\"",
            8,
            "route[0].params.id.case",
            "<int:id> values have one canonical form",
        ),
        (
            "params.rest.case = \"insensitive\"",
            8,
            "route[0].params.rest.case",
            "catch-all",
        ),
        (
            "params.login = {}",
            8,
            "route[0].params.login",
            "case = \"insensitive\"",
        ),
        (
            "params.login.kase = \"insensitive\"",
            8,
            "route[0].params.login",
            "unknown field",
        ),
    ] {
        let err = error(&with(params));
        assert_eq!(err.file, "p.toml", "{params}");
        assert_eq!(err.position.map(|p| p.0), Some(line), "{params}: {err}");
        assert!(err.field.starts_with(field), "{params}: {err}");
        assert!(err.message.contains(says), "{params}: {err}");
    }
}

#[test]
fn the_invalidation_secret_comes_from_a_file_and_is_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    let with = |path: &std::path::Path| {
        format!(
            "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[invalidation]\nsecret_file = {:?}\n",
            path.display().to_string()
        )
    };
    std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let policy = Policy::parse(&with(&file), "p.toml").unwrap();
    let key = policy.invalidation.secret.expect("a secret");
    assert_eq!(key, SigningKey::new("0123456789abcdef0123456789abcdef"));
    assert!(!format!("{key:?}").contains("0123"));

    std::fs::write(&file, "short\n").unwrap();
    let err = error(&with(&file));
    assert_eq!(err.field, "invalidation.secret_file");
    assert_eq!(err.position.map(|p| p.0), Some(5));
    assert!(err.message.contains("at least 16"), "{err}");
    let err = error(&with(&dir.path().join("missing")));
    assert!(err.message.contains("cannot read"), "{err}");
}

#[test]
fn upgrades_list_only_websocket() {
    let with = |list: &str| {
        format!(
            "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nmatch = \"/ws/{{*rest}}\"\ncache = false\nupgrades = {list}\n"
        )
    };
    for (list, websocket) in [
        ("[\"websocket\"]", true),
        ("[\"WebSocket\"]", true),
        ("[]", false),
    ] {
        let policy = Policy::parse(&with(list), "p.toml").unwrap();
        assert_eq!(
            policy.routes.iter().next().unwrap().websocket,
            websocket,
            "{list}"
        );
    }
    for (list, says) in [
        ("[\"h2c\"]", "h2c is never tunnelled"),
        ("[\"websocket\", \"irc\"]", "\"irc\" cannot be tunnelled"),
    ] {
        let err = error(&with(list));
        assert_eq!(
            (err.field.as_str(), err.position.map(|p| p.0)),
            ("route[0].upgrades", Some(7)),
            "{err}"
        );
        assert!(err.message.contains(says), "{err}");
    }
}
