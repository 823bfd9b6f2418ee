//! `cachalot init --flask-routes` and `cachalot check --flask-routes`, through the real binary,
//! on the real output of `flask routes`: the example API's (examples/flask-api) and a larger
//! app's (tests/fixtures/flask-routes/shop.py: 43 rules, nested blueprints, every built-in
//! converter and a custom one). The captured tables are committed; `fixtures_are_what_flask_prints`
//! regenerates them when Flask is importable, so they cannot drift from Flask's format.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flask-routes")
        .join(name)
}

fn cachalot(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(args)
        .env_remove("CACHALOT_CONFIG")
        .env_remove("REDIS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cachalot runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("stdin written");
    drop(input);
    child.wait_with_output().expect("cachalot exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `init --flask-routes FILE`: the draft, which must succeed.
fn init(routes: &Path) -> String {
    let out = cachalot(&["init", "--flask-routes", routes.to_str().unwrap()], None);
    assert!(out.status.success(), "init failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Writes `policy` to a file and runs `check` on it with `extra` arguments.
fn check(policy: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let mut args = vec!["check", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    (cachalot(&args, None), dir)
}

fn match_lines(policy: &str) -> Vec<&str> {
    policy
        .lines()
        .filter(|l| l.starts_with("match = "))
        .collect()
}

#[test]
fn example_api_draft_passes_check_and_fits_its_routes() {
    let routes = fixture("flask-api.routes");
    let policy = init(&routes);
    assert_eq!(
        match_lines(&policy),
        [
            r#"match = "GET /api/credentials/<cred_id>""#,
            r#"match = "GET /api/orgs/<org_id>/settings""#,
            r#"match = "GET /healthz""#,
            r#"match = "POST /api/auth/login""#,
            r#"match = "GET /api/origin-stats""#,
            r#"match = "PUT /api/orgs/<org_id>/settings""#,
            r#"match = "POST /api/credentials/<cred_id>/revoke""#,
            r#"match = "GET /static/<path:filename>""#,
            r#"match = "GET /api/stats""#,
            r#"match = "GET /api/users/<int:user_id>/profile""#,
        ]
    );
    // Nothing is cached until a ttl is filled in; the revoke names the credential's key.
    assert_eq!(policy.matches("\ncache = false").count(), 7);
    assert!(policy.contains("# invalidate = [\"get_credential:{cred_id}\"]\n"));
    assert!(!policy.lines().any(|l| l.starts_with("ttl")));

    let (out, _dir) = check(&policy, &["--flask-routes", routes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "no warnings");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok (10 routes)"), "{stdout}");
    assert!(
        stdout.contains("every route matches a rule of `flask routes` (10 rules)"),
        "{stdout}"
    );
}

#[test]
fn the_shipped_policy_fits_the_example_api() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cachalot.toml");
    let routes = fixture("flask-api.routes");
    let out = cachalot(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--flask-routes",
            routes.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn larger_app_draft_writes_what_cachalot_can_match_and_lists_the_rest() {
    let routes = fixture("shop.routes");
    let policy = init(&routes);
    assert_eq!(policy.matches("\n[[route]]\n").count(), 35, "{policy}");
    for written in [
        r#"match = "GET /api/catalog/products/<int:product_id>""#,
        r#"match = "PUT|PATCH /api/catalog/products/<int:product_id>""#,
        r#"match = "GET /api/catalog/products/<int:product_id>/images/<path:image>""#,
        r#"match = "GET /api/orders/""#,
        r#"match = "GET /api/users/me""#,
        r#"match = "GET /api/users/<username>""#,
        r#"match = "GET /login""#,
        r#"match = "POST /login""#,
        r#"match = "GET /""#,
        r#"match = "GET /api/catalog/sku/<uuid:sku>""#,
        r#"match = "GET /api/catalog/price-below/<float:limit>""#,
    ] {
        assert!(policy.contains(&format!("\n{written}\n")), "{written}");
    }
    // Blueprint endpoints become valid, unique route names.
    assert!(policy.contains("\nname = \"api-orders-get_order\"\n"));
    assert!(policy.contains("\nname = \"login-write\"\n"));
    // Converters cachalot cannot express stay comments, each with its reason.
    for (converter, nearest) in [
        (
            "<slug:category>",
            Some("GET /api/catalog/categories/<category>"),
        ),
        (
            "<any(price, name, rating):order>",
            Some("GET /api/catalog/sort/<order>"),
        ),
        ("<int(min=1):page>", Some("GET /api/catalog/pages/<page>")),
        (
            "<string(length=8):code>",
            Some("GET /api/orders/<code>/receipt"),
        ),
        (
            "<int(signed=True):offset>",
            Some("GET /api/reports/<offset>/daily"),
        ),
        ("<path:fmt>", None),
        ("\"<name>.<ext>\"", None),
        ("\"feed.<any(rss, atom):format>\"", None),
    ] {
        assert!(
            policy.contains(&format!("# Not written: {converter}")),
            "{converter}"
        );
        if let Some(nearest) = nearest {
            assert!(
                policy.contains(&format!("\n# match = \"{nearest}\"\n")),
                "{nearest}"
            );
        }
    }
    // Writes name the GET routes under their path; the same URL is left to RFC 9111 §4.4.
    assert!(policy.contains(
        "# invalidate = [\"catalog-get_product:{product_id}\", \"catalog-list_products\"]\n"
    ));
    assert!(policy.contains(
        "# invalidate = [\"api-orders-get_order:{order_id}\", \"api-orders-list_orders\", \"api-orders-order_items:{order_id}\"]\n"
    ));
    // A route keyed by a username is not invalidated by a write keyed by a numeric id.
    assert!(policy.contains("# invalidate = [\"api-get_user:{user_id}\"]\n"));
    // Static files (the app's and a blueprint's) suggest following the origin.
    assert_eq!(policy.matches("\n# ttl = \"origin\"").count(), 2);

    let (out, _dir) = check(&policy, &["--flask-routes", routes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (35 routes)"));
}

#[test]
fn filled_in_draft_passes_check_and_invalidates_the_keys_it_named() {
    let policy = init(&fixture("shop.routes"));
    // What a user does next: a ttl instead of `cache = false`, the suggested invalidations.
    let filled: String = policy
        .lines()
        .filter(|l| !l.starts_with("cache = false"))
        .map(|l| {
            if l.starts_with("# ttl = \"\"") {
                "ttl = \"1m\"".to_string()
            } else if l.starts_with("# ttl = \"origin\"") {
                "ttl = \"origin\"".to_string()
            } else if l.starts_with("# invalidate = [\"") && !l.contains("\"...\"") {
                l.trim_start_matches("# ").to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_eq!(filled.matches("\ninvalidate = [").count(), 6);
    let (out, dir) = check(&filled, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (35 routes)"));

    let config = dir.path().join("policy.toml");
    let explain = |request: &str| {
        let out = cachalot(
            &["explain", "--config", config.to_str().unwrap(), request],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let read = explain("GET /api/catalog/products/7/reviews");
    assert!(read.contains("cachalot:{catalog-list_reviews:7}"), "{read}");
    let write = explain("POST /api/catalog/products/7/reviews");
    for key in [
        "cachalot:{catalog-get_product:7} and its variants (invalidate)",
        "cachalot:{catalog-list_products} and its variants (invalidate)",
        "cachalot:{catalog-list_reviews:7} and its variants (RFC 9111 §4.4: a GET of the same URI)",
    ] {
        assert!(write.contains(key), "{key}\n{write}");
    }
}

#[test]
fn all_methods_and_sort_order_give_the_same_routes() {
    let plain = init(&fixture("shop.routes"));
    let sorted = init(&fixture("shop-all-methods.routes"));
    let mut a = match_lines(&plain);
    let mut b = match_lines(&sorted);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    assert!(!sorted.contains("HEAD") && !sorted.contains("OPTIONS"));
}

#[test]
fn standard_input_is_read_for_dash() {
    let table = std::fs::read_to_string(fixture("flask-api.routes")).unwrap();
    let out = cachalot(&["init", "--flask-routes", "-"], Some(&table));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), init(&fixture("flask-api.routes")));
}

#[test]
fn check_warns_exactly_for_routes_no_flask_rule_answers() {
    let policy = r#"
[listen]
addr = "127.0.0.1:8080"
admin = "127.0.0.1:9901"
[origin]
url = "http://127.0.0.1:5000"
[redis]
url = "redis://127.0.0.1:6379"

[[route]]
match = "GET /api/catalog/products/{id}"
ttl = "1m"
[[route]]
name = "renamed"
match = "GET /api/products/{id}"
ttl = "2m"
[[route]]
match = "GET /api/catalog/products/new"
ttl = "3m"
[[route]]
match = "GET /api/catalog/sku/{sku}"
ttl = "4m"
[[route]]
match = "GET /api/catalog/sku/<int:sku>"
ttl = "5m"
[[route]]
match = "GET /api/orders/export/{*rest}"
ttl = "6m"
[[route]]
match = "GET /feed.rss"
ttl = "7m"
[[route]]
match = "GET /feed.json"
ttl = "8m"
[[route]]
match = "POST /api/users/{id}"
[[route]]
match = "DELETE /admin/cache/{key}"
[[route]]
match = "/api/catalog/sort/rating"
cache = false
[[route]]
match = "/api/catalog/sort/date"
cache = false
[[route]]
match = "GET /api/catalog/price-below/9.5"
ttl = "9m"
[[route]]
match = "GET /api/catalog/price-below/9"
ttl = "10m"
[[route]]
match = "HEAD /healthz"
cache = false
"#;
    let routes = fixture("shop.routes");
    let (out, _dir) = check(policy, &["--flask-routes", routes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let warnings: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.contains("matches no rule"))
        .map(|l| l.split(" matches no rule").next().unwrap().to_string())
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: route renamed (line 15, GET /api/products/{id})",
            "warning: route GET /api/catalog/products/new (line 18, GET /api/catalog/products/new)",
            "warning: route GET /api/catalog/sku/<int:sku> (line 24, GET /api/catalog/sku/<int:sku>)",
            "warning: route GET /feed.json (line 33, GET /feed.json)",
            "warning: route POST /api/users/{id} (line 36, POST /api/users/{id})",
            "warning: route /api/catalog/sort/date (line 43, * /api/catalog/sort/date)",
            "warning: route GET /api/catalog/price-below/9 (line 49, GET /api/catalog/price-below/9)",
        ]
    );
    assert!(
        text(&out.stdout).contains("7 of 15 routes match no rule of `flask routes`"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn input_that_is_not_a_routes_table_names_the_line() {
    let table = std::fs::read_to_string(fixture("flask-api.routes")).unwrap();
    let mut edited: Vec<&str> = table.lines().collect();
    edited[4] = "healthz GET /healthz";
    let edited = edited.join("\n");
    let help = "Usage: flask [OPTIONS] COMMAND [ARGS]...\n";
    for (input, expected) in [
        (
            help,
            "standard input: line 1: expected the header `flask routes` prints",
        ),
        ("", "standard input: line 1: empty input"),
        (
            "Endpoint  Methods  Rule\nstats  GET  /api/stats\n",
            "standard input: line 2: expected the line of dashes",
        ),
        (
            edited.as_str(),
            "standard input: line 5: \"healthz GET /healthz\" does not fit the columns",
        ),
        (
            "Endpoint  Methods  Rule\n--------  -------  ----\nx         get      /x\n",
            "standard input: line 3: method \"get\"",
        ),
        (
            "Endpoint  Methods  Rule\n--------  -------  ----\nx         GET      /a/<int:\n",
            "standard input: line 3: unclosed '<'",
        ),
    ] {
        let out = cachalot(&["init", "--flask-routes", "-"], Some(input));
        assert_eq!(out.status.code(), Some(1), "{input:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: {expected}")),
            "{stderr}"
        );
        assert_eq!(text(&out.stdout), "", "nothing drafted from bad input");
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cachalot.toml");
    let out = cachalot(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--flask-routes",
            "-",
        ],
        Some(help),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("standard input: line 1:"));
}

/// Runs `flask routes ARGS` for `app` (a file in `dir`), or `None` when Flask is not importable.
fn flask_routes(dir: &Path, app: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("python3")
        .args(["-m", "flask", "--app", app, "routes"])
        .args(args)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .ok()?;
    if !out.status.success() {
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("No module named flask"),
            "flask routes failed: {stderr}"
        );
        return None;
    }
    Some(text(&out.stdout))
}

fn trimmed_lines(table: &str) -> Vec<&str> {
    table.lines().map(str::trim_end).collect()
}

#[test]
fn fixtures_are_what_flask_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        (
            root.join("examples/flask-api"),
            "app.py",
            &[][..],
            "flask-api.routes",
        ),
        (fixture(""), "shop.py", &[][..], "shop.routes"),
        (
            fixture(""),
            "shop.py",
            &["--all-methods", "-s", "rule"][..],
            "shop-all-methods.routes",
        ),
    ];
    for (dir, app, args, captured) in cases {
        let Some(live) = flask_routes(&dir, app, args) else {
            eprintln!(
                "Flask is not importable by python3: the committed tables are used as they are"
            );
            return;
        };
        let committed = std::fs::read_to_string(fixture(captured)).unwrap();
        // Flask before 3.0 stripped the padding at the end of each row; the columns are the same.
        assert_eq!(
            trimmed_lines(&live),
            trimmed_lines(&committed),
            "{captured}"
        );
        // And the live table, through standard input, drafts a policy that fits it.
        let out = cachalot(&["init", "--flask-routes", "-"], Some(&live));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let dir = tempfile::tempdir().unwrap();
        let (policy, routes) = (dir.path().join("p.toml"), dir.path().join("routes"));
        std::fs::write(&policy, &out.stdout).unwrap();
        std::fs::write(&routes, &live).unwrap();
        let out = cachalot(
            &[
                "check",
                "--config",
                policy.to_str().unwrap(),
                "--flask-routes",
                routes.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}

#[test]
fn quotes_and_backslashes_in_a_rule_stay_inside_the_match() {
    let table = "Endpoint  Methods  Rule\n--------  -------  -----------\nsay       GET      /say/\"hi\"\\x\nq         GET      /q\n";
    let out = cachalot(&["init", "--flask-routes", "-"], Some(table));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let policy = text(&out.stdout);
    let (out, _dir) = check(&policy, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("GET /say/\"hi\"\\x"));
    assert!(text(&out.stdout).contains("ok (2 routes)"));
}
